"""Numba kernels behind nncodec's codecs.

Kernels are compiled on first use (``@njit(cache=True)``) and never called
directly on untrusted input: each codec module validates every argument first,
because compiled code does not check bounds.

Where the compiled kernels are cached
-------------------------------------
Every kernel module calls :func:`configure` before its first ``@njit``
decorator runs; it points Numba's cache at a per-user folder outside the
package (:func:`cache_dir`), so that nothing is ever written under
``site-packages/nncodec`` (a ``kernels/__pycache__`` folder left there by an
uninstall would shadow a later editable install of the package). The folder
is, in order:

1. ``$NNCODEC_CACHE_DIR/<tag>`` if ``NNCODEC_CACHE_DIR`` is set;
2. ``$NUMBA_CACHE_DIR`` as given, if the user set it (Numba's own setting);
3. ``$XDG_CACHE_HOME/nncodec/numba/<tag>``, else ``~/.cache/nncodec/numba/<tag>``;

where ``<tag>`` names the nncodec, Python and Numba versions
(``nncodec-0.1.0-py311-numba0.68.1``), so caches of different versions never
mix. A folder that cannot be created or written falls back to one under the
system temporary folder, and that failing, to a fresh temporary folder: a
read-only home never stops nncodec from running. Deleting the folder clears
the cache.

Importing this package imports nothing heavy: Numba is imported by
:func:`configure`, which only the kernel modules call.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading

__all__ = ["cache_dir", "configure", "enable_compile_notice"]

_lock = threading.Lock()
_resolved: str | None = None  # the cache folder chosen for this process
_notice = {"enabled": False, "stream": None, "shown": False, "installed": False}


def _tag() -> str:
    from .. import __version__
    import numba

    return f"nncodec-{__version__}-py{sys.version_info[0]}{sys.version_info[1]}-numba{numba.__version__}"


def _writable(path: str) -> bool:
    """True if ``path`` exists or can be created, and a file can be written in it."""
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
        return True
    except OSError:
        return False


def candidates(environ=None) -> list[tuple[str, str]]:
    """The cache folders to try, in order, as (source, path) pairs (see the module docstring).

    ``source`` is ``"NNCODEC_CACHE_DIR"``, ``"NUMBA_CACHE_DIR"``, ``"XDG_CACHE_HOME"``,
    ``"home"`` or ``"temp"``. Pure: reads ``environ`` (default ``os.environ``), writes nothing.
    """
    env = os.environ if environ is None else environ
    tag = _tag()
    out = []
    if env.get("NNCODEC_CACHE_DIR"):
        out.append(("NNCODEC_CACHE_DIR", os.path.join(os.path.expanduser(env["NNCODEC_CACHE_DIR"]), tag)))
    elif env.get("NUMBA_CACHE_DIR"):
        out.append(("NUMBA_CACHE_DIR", os.path.expanduser(env["NUMBA_CACHE_DIR"])))
    else:
        xdg = env.get("XDG_CACHE_HOME")
        if xdg and os.path.isabs(xdg):  # the XDG spec ignores a relative XDG_CACHE_HOME
            out.append(("XDG_CACHE_HOME", os.path.join(xdg, "nncodec", "numba", tag)))
        else:
            out.append(("home", os.path.join(os.path.expanduser("~"), ".cache", "nncodec", "numba", tag)))
    try:
        user = str(os.getuid())
    except AttributeError:  # Windows
        user = env.get("USERNAME", "user")
    out.append(("temp", os.path.join(tempfile.gettempdir(), f"nncodec-{user}", "numba", tag)))
    return out


def cache_dir() -> str:
    """The folder this process caches compiled kernels in (chosen once, created if needed)."""
    global _resolved
    with _lock:
        if _resolved is None:
            for _, path in candidates():
                if _writable(path):
                    _resolved = path
                    break
            else:
                _resolved = tempfile.mkdtemp(prefix="nncodec-numba-")
        return _resolved


def configure() -> None:
    """Point Numba's cache at :func:`cache_dir`; every kernel module calls this before its decorators.

    Numba picks a function's cache folder when ``@njit(cache=True)`` runs, from
    ``numba.config.CACHE_DIR``; setting it here, right before a module's decorators,
    also covers a configuration reloaded from the environment in between.
    """
    from numba.core import config

    config.CACHE_DIR = cache_dir()
    _skip_blas_probe()
    if _notice["enabled"]:
        _install_listener()


_blas = {"done": False}


def _skip_blas_probe() -> None:
    """Load ``numba.np.arraymath`` without its import-time BLAS probe.

    Numba loads that module when the first kernel is loaded from the cache, and
    the module's import asks whether SciPy's BLAS is there by importing
    ``scipy.linalg`` (0.4 s and more where SciPy is installed, most of a cold
    decode); no nncodec kernel does linear algebra. The probe is answered "yes"
    while the module loads, then the real check is put back: compiled code that
    does use BLAS still checks for SciPy when it is compiled. Nothing else changes.
    """
    if _blas["done"] or "numba.np.arraymath" in sys.modules:
        return
    with _lock:
        if _blas["done"]:
            return
        _blas["done"] = True
        try:
            from numba.np import linalg
        except Exception:  # a Numba without this layout: leave it alone
            return
        real = getattr(linalg, "ensure_blas", None)
        if real is None:
            return
        linalg.ensure_blas = lambda: None
        try:
            import numba.np.arraymath  # noqa: F401
        except Exception:
            pass  # Numba will import it (with its probe) when it needs it
        finally:
            linalg.ensure_blas = real


# ------------------------------------------------------------ first-use notice


def enable_compile_notice(stream=None) -> None:
    """Print one line on ``stream`` (default ``sys.stderr``) when a kernel is first compiled.

    The line appears at most once per process, only when a kernel has no entry in
    the cache and must be compiled, only if ``stream`` is a terminal and
    ``NNCODEC_QUIET`` is unset. The command line calls this; it imports nothing.
    """
    if os.environ.get("NNCODEC_QUIET"):
        return
    _notice["enabled"] = True
    _notice["stream"] = stream
    if "numba" in sys.modules and _resolved is not None:
        _install_listener()


def _install_listener() -> None:
    if _notice["installed"]:
        return
    from numba.core import event

    class _FirstCompile(event.Listener):
        def on_start(self, ev):
            if _notice["shown"]:
                return
            disp = (ev.data or {}).get("dispatcher")
            module = getattr(getattr(disp, "py_func", None), "__module__", "") or ""
            if not module.startswith(__name__ + "."):
                return
            _notice["shown"] = True
            stream = _notice["stream"] or sys.stderr
            try:
                if stream.isatty():
                    # on a line of its own, also when a progress bar is showing (it redraws)
                    stream.write("\r" + " " * 79 + "\r"
                                 f"nncodec: compiling kernels for first use (cached in {_resolved}) ...\n")
                    stream.flush()
            except (AttributeError, OSError, ValueError):
                pass

        def on_end(self, ev):
            pass

    event.register("numba:compile", _FirstCompile())
    _notice["installed"] = True
