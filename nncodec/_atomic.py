"""Atomic output files: write to a temporary file beside the target, then rename."""

from __future__ import annotations

import contextlib
import os
import tempfile

from .errors import UsageError


def same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@contextlib.contextmanager
def atomic_path(path, *, inputs=()):
    """Yield a temporary path; on success fsync it and rename it over ``path``.

    On any exception (Ctrl-C included) the temporary file is removed and
    ``path`` is left as it was. Refuses to overwrite one of ``inputs``.
    """
    path = os.fspath(path)
    for src in inputs:
        if same_file(src, path):
            raise UsageError(f"{path}: output is the same file as the input; choose another output path")
    if os.path.isdir(path):
        raise UsageError(f"{path}: output is a directory; give a file name")
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise UsageError(f"{path}: output directory {d} does not exist")
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".part", dir=d)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
