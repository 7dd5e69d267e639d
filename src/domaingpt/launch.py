"""The ``domaingpt`` program: process-wide defaults that must be set before torch loads.

OpenMP reads its waiting policy once, when torch's runtime loads. By default its idle
threads spin; on a CPU shared with other work (a laptop is rarely idle) a spinning thread
takes a core from the very sibling it waits for, and training slows to a fraction of
its quiet speed beside busy processes. Passive waiting puts idle threads to sleep (see
benchmarks/bench_busy.py for what it costs and saves). A user's own ``OMP_WAIT_POLICY``
wins. The program's stages may also start worker processes of their own (a script
importing domaingpt asks for them: see :mod:`domaingpt.core.processes`). This is the
program's entry point, not a library module: importing ``domaingpt`` changes nothing.
"""

from __future__ import annotations

import os


def main() -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # This process is the program: its stages may start worker processes by themselves
    # (processes = 0); see domaingpt.core.processes (PROGRAM_ENV, automatic_allowed).
    os.environ["DOMAINGPT_PROGRAM_PID"] = str(os.getpid())
    from domaingpt.cli import main as cli_main

    return cli_main()
