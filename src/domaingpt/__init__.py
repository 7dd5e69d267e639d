"""domaingpt: how the training domain shapes small character-level language models."""

__version__ = "0.1.0"
