"""The package's version, in one place below every module that records it."""

__version__ = "0.1.0"
