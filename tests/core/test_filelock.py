"""The run directory's lock: flock semantics on POSIX, and nothing POSIX-only imported at
module level (``from domaingpt.study import Study`` must import on Windows)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from domaingpt.core.filelock import lock_exclusive, read_at, write_at


@pytest.mark.skipif(sys.platform == "win32", reason="flock semantics are POSIX's")
def test_a_second_open_file_cannot_take_the_lock_until_the_first_closes(tmp_path):
    path = tmp_path / ".lock"
    first = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    second = os.open(path, os.O_RDWR)
    try:
        lock_exclusive(first)
        write_at(first, b"1234", 0)
        with pytest.raises(BlockingIOError):
            lock_exclusive(second)
        assert read_at(second, 64, 0) == b"1234"  # who holds it stays readable
        os.close(first)
        first = -1
        lock_exclusive(second)  # released by the close
    finally:
        for fd in (first, second):
            if fd >= 0:
                os.close(fd)


def test_the_package_imports_without_fcntl(tmp_path):
    """What Windows lacks: ``fcntl`` (and ``os.O_NOFOLLOW``, ``os.pread``)."""
    code = (
        "import os, sys\n"
        "sys.modules['fcntl'] = None\n"
        "for name in ('O_NOFOLLOW', 'pread', 'pwrite'):\n"
        "    if hasattr(os, name): delattr(os, name)\n"
        "import domaingpt\n"
        "from domaingpt.study import Study\n"
        "from domaingpt.context import rundir\n"
        "from domaingpt.core import filelock, io\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | filelock.O_NOFOLLOW, 0o644)\n"
        "filelock.write_at(fd, b'42', 0)\n"
        "print(filelock.read_at(fd, 64, 0).decode(), filelock.O_NOFOLLOW)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "lockfile")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["42", "0"]
