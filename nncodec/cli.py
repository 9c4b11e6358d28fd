"""The ``nncodec`` command line.

Errors print one line naming the file, tensor and fix, and exit with a code from
one table (:data:`EXIT_CODES`, docs/CLI.md); ``--debug`` shows the traceback.
``-`` stands for stdin or stdout; ``--json`` prints a machine-readable summary on
every command. Nothing heavy is imported before a command runs, so
``nncodec --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

EXIT_OK = 0
EXIT_DATA = 1
EXIT_ERROR = EXIT_DATA  # the older name
EXIT_USAGE = 2
EXIT_UNSUPPORTED = 3
EXIT_SYSTEM = 4
EXIT_INTERRUPT = 130
EXIT_PIPE = 141

#: (code, meaning): every command exits with one of these (docs/CLI.md has the long form)
EXIT_CODES = (
    (EXIT_OK, "success"),
    (EXIT_DATA, "bad data: damaged or truncated input, checksum mismatch, an update meeting another base, "
                "an input refused (over a limit, an unsafe pickle)"),
    (EXIT_USAGE, "bad usage: options, a missing file, the wrong kind of input, a file where a folder is "
                 "needed, `-` where it cannot go, binary output to a terminal"),
    (EXIT_UNSUPPORTED, "unsupported: a format version, dtype, codec or feature this nncodec does not read"),
    (EXIT_SYSTEM, "the system failed: permission denied, disk full, I/O error, out of memory"),
    (EXIT_INTERRUPT, "interrupted (Ctrl-C); no output was written"),
    (EXIT_PIPE, "stdout was closed early (`| head`); ends quietly"),
)

_MAGIC = b"\x89NNC\r\n\x1a\n"
_CHECKPOINTS = {"safetensors": "safetensors", "torch": "PyTorch (zip)", "torch-legacy": "PyTorch (legacy)",
                "npz": "NumPy .npz"}
_EXT = {"safetensors": ".safetensors", "torch": ".pt", "torch-legacy": ".pt", "npz": ".npz"}


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


class Progress:
    """A one-line progress bar on stderr, shown only on a terminal and for long runs."""

    def __init__(self, label: str, enabled: bool):
        self.label = label
        self.enabled = enabled and sys.stderr.isatty()
        self.t0 = time.monotonic()
        self.shown = False
        self.last = 0.0

    def __call__(self, name: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.t0 < 0.5 or (now - self.last < 0.1 and done < total):
            return
        self.last = now
        frac = min(done / total, 1.0) if total else 1.0
        width = 20
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        elapsed = now - self.t0
        speed = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / speed if speed > 0 and total > done else 0.0
        left = f"{int(eta) // 60}:{int(eta) % 60:02d} left" if eta else ""
        short = name if len(name) <= 24 else "..." + name[-21:]
        sys.stderr.write(f"\r{self.label} [{bar}] {frac * 100:5.1f}% {_human(speed)}/s {left:>9} {short:<24}")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


_ENCODE_EPILOG = """lossy coding:
  Float tensors with at least 2 dimensions and 1024 elements are coded lossily; 1-D
  tensors (biases, norms), tiny tensors and integer buffers stay lossless. --keep and
  --lossy (shell globs on tensor names, repeatable) override the rule; --keep wins.
  --bits and --snr share the rate across tensors at equal rate-distortion slope.
"""


def _size(text: str) -> int:
    """A byte count: 123, 64K, 1.5G, 16GiB, 2TB (powers of 1024)."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = 1
    for suffix, m in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40), ("P", 1 << 50)):
        if t.endswith(suffix):
            t, mult = t[:-1], m
            break
    try:
        v = float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (examples: 64G, 16GiB, 1.5T, 1000000)") from None
    if not v > 0 or v * mult >= 2**63:
        raise argparse.ArgumentTypeError(f"{text!r}: a size must be positive and below 8 EiB")
    return int(v * mult)


def _threads(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: threads must be a positive integer")
    return n


def _engine_args(p, threads: bool = True) -> None:
    """--threads and --max-tensor-size, on every command that codes or reads tensors."""
    if threads:
        p.add_argument("--threads", type=_threads, metavar="N",
                       help="threads to code with (default: every core); the output does not depend on it")
    p.add_argument("--max-tensor-size", type=_size, metavar="SIZE",
                   help="refuse to decode a tensor over SIZE bytes (default 16GiB; raise it for trusted giants)")


def _limits(a):
    from .format.constants import DEFAULT_LIMITS

    n = getattr(a, "max_tensor_size", None)
    return DEFAULT_LIMITS if n is None else DEFAULT_LIMITS.replace(max_tensor_bytes=n)


# ------------------------------------------------------------------ `-`, kinds of input, reports


class Streams:
    """The ``-`` arguments of one command: stdin is copied to a temporary file before the
    command reads it; a stdout output is written to a temporary file and copied to stdout
    once complete, so an error writes nothing there. Both live in one temporary folder
    (in ``$TMPDIR``), removed when the command ends."""

    def __init__(self):
        self._dir = None
        self.names: dict = {}  # temporary path -> the name messages show
        self.stdin_for = None
        self.stdout_path = None
        self.stdout_bytes = 0

    def _tmp(self) -> str:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="nncodec-")
        return self._dir

    def output(self, arg: str, kind: str = "nnc") -> str:
        """The path to write for output argument ``arg`` (a temporary file for ``-``)."""
        from .errors import UsageError

        if arg != "-":
            return arg
        if self.stdout_path is not None:
            raise UsageError("`-` (stdout) is given for two outputs; one command writes one output to stdout")
        if sys.stdout is None or sys.stdout.isatty():
            raise UsageError("refusing to write binary data to a terminal; redirect stdout (`> out.nnc`) "
                             "or pipe it into another command")
        path = os.path.join(self._tmp(), "stdout" + _EXT.get(kind, ".nnc"))
        self.stdout_path = path
        self.names[path] = "<stdout>"
        return path

    def input(self, arg: str, what: str) -> str:
        """The path to read for input argument ``arg`` (stdin copied to a temporary file for ``-``)."""
        from .errors import UsageError

        if arg != "-":
            return arg
        if self.stdin_for is not None:
            raise UsageError(f"`-` (stdin) is given for both {self.stdin_for} and {what}; stdin can be read once")
        stdin = getattr(sys.stdin, "buffer", None)
        if stdin is None or sys.stdin.isatty():
            raise UsageError(f"{what} `-` reads stdin, but stdin is a terminal; pipe or redirect a file into it "
                             f"(`< model.safetensors`)")
        self.stdin_for = what
        path = os.path.join(self._tmp(), "stdin")
        with open(path, "wb") as f:
            shutil.copyfileobj(stdin, f, 1 << 20)
        self.names[path] = "<stdin>"
        return path

    def emit(self) -> None:
        """Copy a finished stdout output to stdout."""
        if self.stdout_path is None:
            return
        sys.stdout.flush()
        out = sys.stdout.buffer
        with open(self.stdout_path, "rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)
        out.flush()
        self.stdout_bytes = os.path.getsize(self.stdout_path)

    def show(self, text: str) -> str:
        """``text`` with temporary paths replaced by ``<stdin>`` / ``<stdout>``."""
        for path, name in sorted(self.names.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(path, name)
        if self._dir is not None:
            text = text.replace(self._dir + os.sep, "")
        return text

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _shown(arg: str, output: bool = False) -> str:
    return ("<stdout>" if output else "<stdin>") if arg == "-" else arg


def no_folder_dash(*pairs) -> None:
    """A folder argument next to a ``-``: stdin and stdout carry one file, never a folder."""
    from .errors import UsageError

    for folder, dash, role in pairs:
        if dash == "-":
            raise UsageError(f"{folder} is a model folder, and `-` ({role}) carries one file, not a folder; "
                             f"give a folder path instead of `-`")


def _is_update(path: str):
    """True or False when the first record says whether ``path`` is an update; None when it cannot tell."""
    import struct

    try:
        with open(path, "rb") as f:
            head = f.read(16 + 24)
            if len(head) < 40:
                return None
            if head[16:18] != b"NR" or head[18:19] != b"M":
                return False  # no metadata record: an update always has one
            hlen = struct.unpack_from("<I", head, 20)[0]
            if hlen > 1 << 20:
                return None
            raw = f.read(hlen)
        md = json.loads(raw.rstrip(b" \x00").decode("utf-8")).get("metadata")
    except (OSError, ValueError, AttributeError):
        return None
    return isinstance(md, dict) and "nncodec.update.base_sha256" in md


def kind_of(path: str) -> str:
    """What ``path`` holds, from its bytes: ``folder``, ``missing``, ``empty``, ``nnc``, ``update``,
    ``nnc-damaged`` (the magic changed by a text-mode transfer), a checkpoint format, or ``unknown``."""
    from . import io as nio
    from .errors import NNCodecError

    if os.path.isdir(path):
        return "folder"
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "unknown"
    if not head:
        return "empty"
    if head[:8] == _MAGIC or (len(head) < 8 and _MAGIC.startswith(head)):
        return "update" if _is_update(path) else "nnc"
    if head[:4] == _MAGIC[:4]:
        return "nnc-damaged"
    try:
        return nio.detect_format(path)
    except NNCodecError:
        return "unknown"


def check_input(path: str, want: str) -> str:
    """Refuse an input of the wrong kind with a message that names the command to use.

    ``want`` is ``source`` (encode: a checkpoint), ``nnc`` (decode), ``readable`` (info: an .nnc file
    or update), ``checkpoint``
    (compare, diff: any checkpoint or an encoded one, not an update) or ``update`` (patch)."""
    from .errors import CorruptError, FormatError, TruncatedError, UsageError

    k = kind_of(path)
    if k == "missing":
        raise UsageError(f"{path}: no such file or folder")
    if k == "empty":
        raise TruncatedError(f"{path}: empty file (0 bytes); an incomplete download or copy?")
    if k == "nnc-damaged":
        raise CorruptError(f"{path}: the magic bytes are damaged (the first four match nncodec's: a text-mode "
                           f"transfer probably changed line endings); copy the file again in binary mode")
    if want in ("nnc", "readable"):
        if k in _CHECKPOINTS:
            raise FormatError(f"{path}: not an nncodec file but a {_CHECKPOINTS[k]} checkpoint; encode it with "
                             f"`nncodec encode {path} OUT.nnc` (`nncodec compare` reads checkpoints as they are)")
        if k == "unknown":
            raise FormatError(f"{path}: not an nncodec file (nor a checkpoint nncodec reads); this command reads "
                             f"the .nnc files `nncodec encode` writes")
        if want == "nnc" and k == "update":
            raise FormatError(f"{path}: is an nncodec update (nncodec diff), not an encoded checkpoint; apply it "
                             f"with `nncodec patch BASE {path} OUT`")
    elif want == "source":
        if k in ("nnc", "update"):
            raise FormatError(f"{path}: is already an nncodec file; decode it first (`nncodec decode {path} OUT`) "
                              f"or copy it")
    elif want == "checkpoint":
        if k == "update":
            raise FormatError(f"{path}: is an nncodec update (nncodec diff), not a checkpoint; apply it with "
                             f"`nncodec patch BASE {path} OUT` and use the result")
    elif want == "update":
        if k in _CHECKPOINTS or k == "nnc":
            what = f"a {_CHECKPOINTS[k]} checkpoint" if k in _CHECKPOINTS else "an encoded checkpoint"
            raise FormatError(f"{path}: is {what}, not an nncodec update; `nncodec diff BASE NEW OUT` writes an "
                             f"update, and `nncodec compare A B` shows how two checkpoints differ")
        if k == "unknown":
            raise FormatError(f"{path}: not an nncodec update (nor any file nncodec reads); "
                             f"`nncodec diff BASE NEW OUT` writes one")
    return k


def exit_code(e: BaseException) -> int:
    """The exit code for an error (the table in :data:`EXIT_CODES`)."""
    from .errors import FormatError, NNCodecError, UnsupportedError, UsageError

    if isinstance(e, KeyboardInterrupt):
        return EXIT_INTERRUPT
    if isinstance(e, BrokenPipeError):
        return EXIT_PIPE
    if isinstance(e, UnsupportedError) or (isinstance(e, FormatError) and "newer nncodec" in str(e)):
        return EXIT_UNSUPPORTED
    if isinstance(e, (UsageError, FormatError)):  # FormatError: not the kind of file the command needs
        return EXIT_USAGE
    if isinstance(e, NNCodecError):
        return EXIT_DATA
    if isinstance(e, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return EXIT_USAGE
    return EXIT_SYSTEM  # other OSError, MemoryError


def _with_hint(e: BaseException, a) -> str:
    """The message of ``e``, plus how to recover the good tensors when a .nnc file is damaged."""
    from .errors import CorruptError

    msg = str(e)
    if not isinstance(e, CorruptError) or "--salvage" in msg:
        return msg
    what = msg.split(": ", 1)[0]
    if not os.path.isfile(what) or kind_of(what) != "nnc":
        return msg
    if a.command == "decode" and what == getattr(a, "_input_path", None):
        return msg + "; rerun with --salvage to write the tensors before the damage"
    arg = "-" if what in a._streams.names else what
    return msg + f"; `nncodec decode --salvage {arg} OUT` writes the tensors before the damage"


def report(a, doc: dict, line: str) -> None:
    """The summary of a command that writes an output: ``doc`` as JSON with --json, else ``line``
    unless --quiet; on stderr when the output itself goes to stdout."""
    out = sys.stderr if a._streams.stdout_path is not None else sys.stdout
    if getattr(a, "json", False):
        out.write(json.dumps(doc, indent=1) + "\n")
    elif not getattr(a, "quiet", False):
        print(line, file=out)
    out.flush()


def warn(text: str) -> None:
    print(f"nncodec: warning: {text}", file=sys.stderr)


def warn_unmatched(a, names) -> None:
    """A warning for each --keep/--lossy pattern that matches no tensor name."""
    import fnmatch

    names = list(names)
    for flag in ("keep", "lossy"):
        for pat in getattr(a, flag, None) or ():
            if not any(fnmatch.fnmatchcase(n, pat) for n in names):
                example = f" (names look like {names[0]!r}; `nncodec info` lists them)" if names else ""
                warn(f"--{flag} {pat!r} matches no tensor{example}")


def rate_of(a):
    """The rate options of an encode command line, or None when it is lossless."""
    rate = {k: getattr(a, k) for k in ("bits", "size", "ratio", "snr", "step", "max_error", "preset")
            if getattr(a, k, None) is not None}
    return rate or None


def _is_url(path: str) -> bool:
    """An input given as a URL (``https://...``, ``s3://...``; not ``file://``): read by range requests."""
    from .remote import is_url

    return is_url(path)


def _local(path: str) -> str:
    """``file:///a/b.nnc`` as the path ``/a/b.nnc``."""
    from .remote import local_path

    return local_path(path)


def _remote_size(url: str) -> int:
    from .remote import RemoteFile

    rf = RemoteFile(url)
    try:
        return rf.size
    finally:
        rf.close()


def _size_of(path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _report_args(p) -> None:
    p.add_argument("--json", action="store_true",
                   help="print a JSON summary for scripts (on stderr when the output is stdout)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")


def _main_epilog() -> str:
    import textwrap

    rows = "".join(textwrap.fill(text, 88, initial_indent=f"  {code:<5}", subsequent_indent=" " * 7) + "\n"
                   for code, text in EXIT_CODES)
    return ("- stands for stdin (an input) or stdout (an output), never for a folder; --json prints a summary "
            "for scripts\n(on stderr when the output is stdout). docs/CLI.md has the details.\n\nexit codes:\n" + rows)


def _parser() -> argparse.ArgumentParser:
    from .encode.options import OBJECTIVES, QUANTIZERS
    from .encode.presets import PRESETS, help_text

    p = argparse.ArgumentParser(
        prog="nncodec",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Small files for neural-network weights. Reads safetensors, PyTorch .pt/.pth/.bin "
        "(zip and legacy) and NumPy .npz without running pickle code.",
        epilog=_main_epilog(),
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    e = sub.add_parser("encode", help="encode a checkpoint to a .nnc file",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Encode a checkpoint to a .nnc file: losslessly, unless a rate option "
                       "(--bits, --snr, --step, --max-error) or --preset is given.",
                       epilog=_ENCODE_EPILOG + help_text())
    e.add_argument("input", help="checkpoint: .safetensors, .pt/.pth/.bin, .npz, - for stdin; or a model folder "
                   "(spec/FOLDERS.md)")
    e.add_argument("output", help=".nnc file to write (written atomically), - for stdout; a folder for a model folder")
    e.add_argument("--format", choices=["safetensors", "torch", "npz"], help="input format (default: detected from the bytes)")
    e.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE", help="add user metadata (repeatable)")
    rate = e.add_mutually_exclusive_group()
    rate.add_argument("--bits", type=float, metavar="B",
                      help="bits per float parameter of the whole file (8 x file bytes / float elements), within 0.5%%")
    rate.add_argument("--size", metavar="SIZE", help="file size within 0.5%%: bytes, or 12MB (10^6), 11.5MiB (2^20)")
    rate.add_argument("--ratio", type=float, metavar="R", help="tensor bytes / file bytes, within 0.5%%")
    rate.add_argument("--snr", type=float, metavar="DB", help="weight SNR in dB over the lossy tensors")
    rate.add_argument("--step", type=float, metavar="D", help="one quantization step for every lossy tensor")
    rate.add_argument("--max-error", type=float, metavar="E", help="no weight changes by more than E")
    e.add_argument("--preset", choices=list(PRESETS), help="lossy settings in one word")
    e.add_argument("--keep", action="append", default=[], metavar="PATTERN", help="keep matching tensors lossless")
    e.add_argument("--lossy", action="append", default=[], metavar="PATTERN", help="code matching float tensors lossily")
    e.add_argument("--quantizer", choices=list(QUANTIZERS), default="scalar",
                   help="quantizer for lossy tensors (default scalar)")
    e.add_argument("--objective", choices=list(OBJECTIVES), default="relative",
                   help="what rate allocation minimises: each tensor's relative error (default) or the total squared error")
    e.add_argument("--importance", metavar="FILE|auto",
                   help="weigh each tensor's error in rate allocation: auto (from the norms feeding each matrix) or "
                   "a .npz/.safetensors file of per-tensor scalars or per-input-column vectors (spec/RATE.md)")
    e.add_argument("--dither", action="store_true", help="subtractive dither: unbiased reconstruction")
    e.add_argument("--seed", type=int, default=0, help="dither seed (default 0)")
    _engine_args(e)
    _report_args(e)

    d = sub.add_parser("decode", help="decode a .nnc file to a checkpoint",
                       description="Decode a .nnc file to a checkpoint. The format written is --format if given, "
                       "else the output extension, else the format the file was encoded from.")
    d.add_argument("input", help=".nnc file, - for stdin, a URL (https://, s3://, ...: read by range requests), "
                                 "or a folder nncodec encode wrote")
    d.add_argument("output", help="checkpoint to write (written atomically), - for stdout; a folder for an "
                   "encoded folder")
    d.add_argument("--format", choices=["safetensors", "torch", "torch-legacy", "npz"],
                   help="output format (to stdout: safetensors unless given)")
    d.add_argument("--salvage", action="store_true",
                   help="from a damaged or truncated file, write the tensors before the damage")
    _engine_args(d)
    _report_args(d)

    i = sub.add_parser("info", help="list the tensors of a .nnc file",
                       description="List the tensors of a .nnc file: dtype, shape, pipeline, stored bytes, "
                       "ratio (stored / raw) and bits per value.")
    i.add_argument("input", help=".nnc file, - for stdin, a URL (https://, s3://, ...), or an encoded folder")
    i.add_argument("--json", action="store_true", help="print JSON for scripts")
    _engine_args(i)

    df = sub.add_parser("diff", help="write the update from BASE to NEW (a fine-tune delta)",
                        description="Write the difference between checkpoint NEW and checkpoint BASE as a .nnc "
                        "update that records BASE's hash (spec/UPDATES.md). Lossless (exact XOR deltas) unless a "
                        "quantizer or sparsification option is given.")
    df.add_argument("base", help="the checkpoint (or model folder) both sides hold; - for stdin")
    df.add_argument("new", help="the fine-tuned checkpoint; - for stdin")
    df.add_argument("output", help=".nnc update to write (atomically), - for stdout")
    df.add_argument("--quantizer", choices=["scalar", "stochastic", "3lc"], help="lossy delta coding")
    st = df.add_mutually_exclusive_group()
    st.add_argument("--step", type=float, help="quantization step")
    st.add_argument("--rel-step", type=float, help="step relative to each delta's RMS")
    df.add_argument("--no-dither", action="store_true", help="scalar without subtractive dither")
    df.add_argument("--seed", type=int, default=0, help="dither seed (default 0)")
    sp = df.add_mutually_exclusive_group()
    sp.add_argument("--topk", type=float, metavar="FRACTION", help="keep the largest FRACTION of each delta")
    sp.add_argument("--threshold", type=float, help="keep deltas with |d| >= THRESHOLD")
    df.add_argument("--sparsity", type=float, default=1.0, help="3LC sparsity multiplier s >= 1 (default 1)")
    df.add_argument("--min-elements", type=int, default=0, help="code smaller tensors losslessly")
    df.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE", help="add user metadata (repeatable)")
    _engine_args(df, threads=False)
    _report_args(df)

    pt = sub.add_parser("patch", help="apply an update to BASE and write the result",
                        description="Apply a .nnc update written by `nncodec diff` to BASE and write the result; "
                        "refuses a BASE other than the one the update was made against.")
    pt.add_argument("base", help="the checkpoint (or model folder) the update was made against; - for stdin")
    pt.add_argument("update", help=".nnc update; - for stdin")
    pt.add_argument("output", help="checkpoint to write (atomically), - for stdout")
    pt.add_argument("--format", choices=["safetensors", "torch", "torch-legacy", "npz"],
                    help="output format (to stdout: safetensors unless given)")
    _engine_args(pt, threads=False)
    _report_args(pt)

    c = sub.add_parser("compare", help="compare two checkpoints tensor by tensor",
                       description="Compare two checkpoints (any supported format, .nnc included) tensor by tensor: "
                       "SNR in dB (10·log10 Σw²/Σ(w−ŵ)²), max absolute error and relative error ‖w−ŵ‖/‖w‖.")
    c.add_argument("a", help="reference checkpoint (or model folder); - for stdin")
    c.add_argument("b", help="checkpoint (or folder) to compare with it; - for stdin")
    c.add_argument("--json", action="store_true", help="print JSON for scripts")
    _engine_args(c)
    return p


def _parse_metadata(items) -> dict:
    from .errors import UsageError

    out = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k:
            raise UsageError(f"--metadata {it!r}: expected KEY=VALUE")
        out[k] = v
    return out


def cmd_encode(a) -> int:
    from . import io as nio
    from .encode import EncodeOptions
    from .files import encode_file

    opts = EncodeOptions.from_keywords(**{k: getattr(a, k) for k in EncodeOptions.KEYWORDS if hasattr(a, k)})
    if os.path.isdir(a.input):  # a model folder (spec/FOLDERS.md)
        from . import folders_cli

        no_folder_dash((a.input, a.output, "stdout"))
        return folders_cli.encode(a, opts)
    st = a._streams
    dst = st.output(a.output, "nnc")
    src = st.input(a.input, "INPUT")
    check_input(src, "source")
    fmt = a.format or nio.detect_format(src)
    prog = Progress("encoding", not a.quiet)
    t0 = time.perf_counter()
    try:
        infos = encode_file(src, dst, format=a.format, metadata=_parse_metadata(a.metadata), progress=prog,
                            options=opts, threads=a.threads, limits=_limits(a))
    finally:
        prog.close()
    dt = time.perf_counter() - t0
    st.emit()
    warn_unmatched(a, [t.name for t in infos])
    raw, out = _size_of(src), _size_of(dst)
    lossy = [t for t in infos if t.pipeline.array_stages]
    n = sum(t.size for t in lossy)
    bpw = 8 * sum(t.stored_bytes for t in lossy) / n if n else None
    from . import dtypes as _dt

    n_float = sum(t.size for t in infos if t.alias_of is None and _dt.kind(t.dtype) == "f")
    bpp = 8 * out / n_float if n_float and out is not None else None  # what --bits targets: the whole file
    extra = f", {len(lossy)} lossy" if lossy else ""
    if lossy and bpp is not None:
        extra += f", {bpp:.3f} bits per float parameter (whole file)"
    report(a, {"command": "encode", "input": a.input, "output": a.output, "input_format": fmt,
               "input_bytes": raw, "output_bytes": out, "ratio": round(out / raw, 6) if raw else None,
               "tensors": len(infos), "lossy_tensors": len(lossy), "lossless": not lossy, "rate": rate_of(a),
               "bits_per_weight": None if bpw is None else round(bpw, 4),
               "bits_per_parameter": None if bpp is None else round(bpp, 4), "seconds": round(dt, 3)},
           f"{_shown(a.input)} -> {_shown(a.output, True)}: {_human(raw)} -> {_human(out)} "
           f"({100 * out / max(raw, 1):.1f}%), {len(infos)} tensors{extra}, {dt:.2f} s")
    return 0


def cmd_decode(a) -> int:
    from .api import open as nopen
    from .files import decode_file

    if os.path.isdir(a.input):  # an encoded model folder (spec/FOLDERS.md)
        from . import folders_cli

        no_folder_dash((a.input, a.output, "stdout"))
        return folders_cli.decode(a)
    st = a._streams
    fmt = a.format or ("safetensors" if a.output == "-" else None)
    dst = st.output(a.output, fmt)
    src = a._input_path = _local(st.input(a.input, "INPUT"))
    url = _is_url(src)
    if not url:  # a URL is checked as it is read
        check_input(src, "nnc")
    names = set()

    def count(name, done, total):
        names.add(name)
        prog(name, done, total)

    prog = Progress("decoding", not a.quiet)
    t0 = time.perf_counter()
    try:
        fmt = decode_file(src, dst, format=fmt, progress=count, salvage=a.salvage, threads=a.threads,
                          limits=_limits(a))
    finally:
        prog.close()
    dt = time.perf_counter() - t0
    st.emit()
    in_bytes = None if url else _size_of(src)
    if a.salvage and not url:
        tensors = len(names)
    elif a.salvage:
        tensors, in_bytes = len(names), _remote_size(src)
    else:
        with nopen(src, limits=_limits(a)) as r:
            tensors, in_bytes = len(r), r.file_size
    out = _size_of(dst)
    report(a, {"command": "decode", "input": a.input, "output": a.output, "format": fmt,
               "input_bytes": in_bytes, "output_bytes": out, "tensors": tensors, "salvage": bool(a.salvage),
               "seconds": round(dt, 3)},
           f"{_shown(a.input)} -> {_shown(a.output, True)} ({fmt}): {_human(out)}, {dt:.2f} s")
    return 0


def _entropy_bits_per_weight(levels, n_weights: int) -> float:
    """First-order empirical entropy of the symbols, spread over the tensor's weights."""
    from .entropy.stats import entropy_bits, symbol_counts

    return float(entropy_bits(symbol_counts(levels))) / n_weights


def cmd_info(a) -> int:
    from .api import open as nopen

    if os.path.isdir(a.input):  # an encoded model folder (spec/FOLDERS.md)
        from . import folders_cli

        return folders_cli.info(a)
    src = _local(a._streams.input(a.input, "INPUT"))
    if not _is_url(src):  # a URL is checked as it is read: its trailer, index and record headers
        check_input(src, "readable")
    entropy = {}
    with nopen(src, limits=_limits(a), threads=a.threads) as r:
        infos = r.infos()
        md = r.metadata
        size = r.file_size
        for t in infos:
            if t.alias_of is None and t.pipeline.array_stages and t.size:
                entropy[t.name] = _entropy_bits_per_weight(r.levels(t.name), t.size)
    rows = []
    for t in infos:
        rows.append({
            "name": t.name, "dtype": t.dtype, "shape": list(t.shape),
            "pipeline": t.pipeline.to_json() if t.alias_of is None else None,
            "alias_of": t.alias_of,
            "stored_bytes": 0 if t.alias_of else t.stored_bytes,
            "raw_bytes": t.raw_bytes,
            "ratio": None if t.alias_of else round(t.ratio, 6),
            "bits_per_value": None if t.alias_of else round(t.bits_per_value, 4),
            "entropy_bits_per_value": round(entropy[t.name], 4) if t.name in entropy else None,
        })
    total_raw = sum(t.raw_bytes for t in infos if t.alias_of is None)
    total_stored = sum(t.stored_bytes for t in infos if t.alias_of is None)
    if a.json:
        json.dump({"file": a.input, "file_bytes": size, "metadata": md, "tensors": rows,
                   "raw_bytes": total_raw, "stored_bytes": total_stored}, sys.stdout, indent=1)
        print()
        return 0
    head = ["name", "dtype", "shape", "pipeline", "stored", "ratio", "bits/value", "entropy"]
    table = []
    for t, r in zip(infos, rows):
        if t.alias_of:
            table.append([t.name, t.dtype, "x".join(map(str, t.shape)) or "()", f"= {t.alias_of}", "0", "-", "-", ""])
        else:
            ent = f"{entropy[t.name]:.2f}" if t.name in entropy else ""
            table.append([t.name, t.dtype, "x".join(map(str, t.shape)) or "()", t.pipeline.describe(),
                          str(t.stored_bytes), f"{100 * t.ratio:.1f}%", f"{t.bits_per_value:.2f}", ent])
    widths = [max(len(head[j]), *(len(row[j]) for row in table)) if table else len(head[j]) for j in range(len(head))]
    right = {4, 5, 6, 7}
    fmt_row = lambda row: "  ".join(c.rjust(w) if j in right else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths)))
    print(fmt_row(head))
    print("  ".join("-" * w for w in widths))
    for row in table:
        print(fmt_row(row))
    ratio = 100 * total_stored / total_raw if total_raw else 0.0
    print(f"\n{len(infos)} tensors, {_human(total_raw)} raw -> {_human(total_stored)} stored ({ratio:.1f}%), "
          f"file {_human(size)}")
    if entropy:
        print("entropy: first-order empirical entropy of the quantized symbols, in bits per weight")
    if md:
        print("metadata: " + ", ".join(f"{k}={v if len(v) < 40 else v[:37] + '...'}" for k, v in md.items()))
    return 0


def _diff_options(a) -> dict:
    opts = {}
    for k in ("quantizer", "step", "rel_step", "topk", "threshold"):
        if getattr(a, k) is not None:
            opts[k] = getattr(a, k)
    if a.no_dither:
        opts["dither"] = False
    if a.seed:
        opts["seed"] = a.seed
    if a.sparsity != 1.0:
        opts["sparsity"] = a.sparsity
    if a.min_elements:
        opts["min_elements"] = a.min_elements
    return opts


def diff_lossless(opts: dict) -> bool:
    return not any(k in opts for k in ("quantizer", "topk", "threshold"))


def cmd_diff(a) -> int:
    from .federated.files import diff_files

    opts = _diff_options(a)
    if os.path.isdir(a.base) or os.path.isdir(a.new):  # model folders, shard by shard (spec/FOLDERS.md)
        from . import folders_cli

        folder = a.base if os.path.isdir(a.base) else a.new
        no_folder_dash((folder, a.base, "stdin"), (folder, a.new, "stdin"), (folder, a.output, "stdout"))
        return folders_cli.diff(a, opts)
    st = a._streams
    out = st.output(a.output, "nnc")
    base = st.input(a.base, "BASE")
    new = st.input(a.new, "NEW")
    check_input(base, "checkpoint")
    check_input(new, "checkpoint")
    t0 = time.perf_counter()
    infos = diff_files(base, new, out, metadata=_parse_metadata(a.metadata), limits=_limits(a), **opts)
    dt = time.perf_counter() - t0
    st.emit()
    size, nsize = _size_of(out), _size_of(new)
    report(a, {"command": "diff", "base": a.base, "new": a.new, "output": a.output, "base_bytes": _size_of(base),
               "new_bytes": nsize, "output_bytes": size, "ratio": round(size / nsize, 6) if nsize else None,
               "tensors": len(infos), "lossless": diff_lossless(opts), "options": opts, "seconds": round(dt, 3)},
           f"{_shown(a.new)} - {_shown(a.base)} -> {_shown(a.output, True)}: {_human(size)} "
           f"({100 * size / max(nsize, 1):.1f}% of {_shown(a.new)}), {dt:.2f} s")
    return 0


def cmd_patch(a) -> int:
    from .api import open as nopen
    from .errors import NNCodecError
    from .federated.files import patch_files

    if os.path.isdir(a.base) or os.path.isdir(a.update):  # model folders (spec/FOLDERS.md)
        from . import folders_cli

        folder = a.base if os.path.isdir(a.base) else a.update
        no_folder_dash((folder, a.base, "stdin"), (folder, a.update, "stdin"), (folder, a.output, "stdout"))
        return folders_cli.patch(a)
    st = a._streams
    fmt = a.format or ("safetensors" if a.output == "-" else None)
    out = st.output(a.output, fmt)
    base = st.input(a.base, "BASE")
    update = st.input(a.update, "UPDATE")
    check_input(update, "update")
    check_input(base, "checkpoint")
    t0 = time.perf_counter()
    fmt = patch_files(base, update, out, format=fmt, limits=_limits(a))
    dt = time.perf_counter() - t0
    st.emit()
    try:
        with nopen(update, limits=_limits(a)) as r:
            tensors = len(r)
    except NNCodecError:
        tensors = None
    report(a, {"command": "patch", "base": a.base, "update": a.update, "output": a.output, "format": fmt,
               "base_bytes": _size_of(base), "update_bytes": _size_of(update), "output_bytes": _size_of(out),
               "tensors": tensors, "seconds": round(dt, 3)},
           f"{_shown(a.base)} + {_shown(a.update)} -> {_shown(a.output, True)} ({fmt}), {dt:.2f} s")
    return 0


def cmd_compare(a) -> int:
    import math

    from .compare import diff_tensor, load_tensors, overall_diff
    from .errors import CorruptError

    if os.path.isdir(a.a) or os.path.isdir(a.b):  # model folders, shard by shard (spec/FOLDERS.md)
        from . import folders_cli

        folder = a.a if os.path.isdir(a.a) else a.b
        no_folder_dash((folder, a.a, "stdin"), (folder, a.b, "stdin"))
        return folders_cli.compare(a)
    st = a._streams
    pa = st.input(a.a, "A")
    pb = st.input(a.b, "B")
    check_input(pa, "checkpoint")
    check_input(pb, "checkpoint")
    A = load_tensors(pa, limits=_limits(a))
    B = load_tensors(pb, limits=_limits(a))
    common = [n for n in A if n in B]
    diffs = []
    for n in common:
        if A[n].shape != B[n].shape:
            raise CorruptError(f"tensor {n!r}: shapes differ, {A[n].shape} in {_shown(a.a)} vs {B[n].shape} in "
                               f"{_shown(a.b)}; are these checkpoints of the same model?")
        diffs.append(diff_tensor(n, A[n], B[n]))
    overall = overall_diff(diffs)
    only_a, only_b = [n for n in A if n not in B], [n for n in B if n not in A]
    if not common and (A or B):
        warn(f"{_shown(a.a)} and {_shown(a.b)} have no tensor name in common; are these checkpoints of the "
             f"same model?")

    def num(x):
        return None if isinstance(x, float) and math.isinf(x) else x

    if a.json:
        rows = [{"name": d.name, "dtype": d.dtype, "shape": list(d.shape), "snr_db": num(d.snr_db),
                 "max_abs_error": d.max_abs_error, "rel_error": d.rel_error, "exact": d.exact} for d in diffs]
        json.dump({"tensors": rows, "overall": {"snr_db": num(overall.snr_db), "max_abs_error": overall.max_abs_error,
                                                "rel_error": overall.rel_error, "exact": overall.exact},
                   "only_in_a": only_a, "only_in_b": only_b}, sys.stdout, indent=1)
        print()
        return 0
    head = ["name", "dtype", "shape", "SNR dB", "max |err|", "rel err"]
    fmt_snr = lambda x: "exact" if math.isinf(x) and x > 0 else f"{x:.2f}"
    table = [[d.name, d.dtype, "x".join(map(str, d.shape)) or "()", "exact" if d.exact else fmt_snr(d.snr_db),
              f"{d.max_abs_error:.3g}", f"{d.rel_error:.3g}"] for d in diffs]
    table.append(["(all)", "", "", "exact" if overall.exact else fmt_snr(overall.snr_db),
                  f"{overall.max_abs_error:.3g}", f"{overall.rel_error:.3g}"])
    widths = [max(len(head[j]), *(len(r[j]) for r in table)) for j in range(len(head))]
    line = lambda r: "  ".join(c.rjust(w) if j >= 3 else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths)))
    print(line(head))
    print("  ".join("-" * w for w in widths))
    for r in table:
        print(line(r))
    if only_a:
        print(f"only in {_shown(a.a)}: {', '.join(only_a)}")
    if only_b:
        print(f"only in {_shown(a.b)}: {', '.join(only_b)}")
    return 0


def _stdout_to_devnull() -> None:
    """After EPIPE: point stdout at /dev/null so the interpreter's last flush cannot fail again."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError):
        pass


def main(argv=None) -> int:
    parser = _parser()
    a = parser.parse_args(argv)
    if a.version:
        from . import __version__

        print(f"nncodec {__version__}")
        return 0
    if not a.command:
        parser.print_help()
        return EXIT_USAGE
    from .errors import NNCodecError
    from .kernels import enable_compile_notice

    enable_compile_notice()  # one stderr line when a first run compiles kernels
    cmd = {"encode": cmd_encode, "decode": cmd_decode, "info": cmd_info, "compare": cmd_compare,
           "diff": cmd_diff, "patch": cmd_patch}[a.command]
    a._streams = streams = Streams()
    try:
        rc = cmd(a)
        if sys.stdout is not None:
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return rc
    except BrokenPipeError:  # `nncodec compare a b | head -1`: the reader has what it wanted
        _stdout_to_devnull()
        return EXIT_PIPE
    except KeyboardInterrupt:
        if a.debug:
            raise
        print("nncodec: interrupted; no output file was written", file=sys.stderr)
        return EXIT_INTERRUPT
    except (NNCodecError, OSError, MemoryError) as e:
        if a.debug:
            raise
        if isinstance(e, MemoryError):
            msg = "out of memory"
        elif isinstance(e, NNCodecError):
            msg = _with_hint(e, a)
        else:
            where = f"{e.filename}: " if e.filename else ""
            msg = f"{where}{e.strerror or e}"
        print(f"nncodec: error: {streams.show(msg)}", file=sys.stderr)
        return exit_code(e)
    finally:
        streams.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
