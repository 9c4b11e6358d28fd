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
    """Yield a temporary path; on success rename it over ``path``.

    On any exception (Ctrl-C included) the temporary file is removed and
    ``path`` is left as it was. Refuses to overwrite one of ``inputs``.
    When ``path`` exists, the new file is fsynced before the rename, so that a
    crash of the machine cannot lose both the old file and the new one; a new
    path is not (as ``cp`` does not): flushing costs as much as writing.
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
    # the name is reserved; the writer creates the file afresh. Opening the empty file with
    # truncation instead would make ext4 (its replace-via-truncate rule) flush all of it on close
    os.unlink(tmp)
    try:
        yield tmp
        if os.path.lexists(path):
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
