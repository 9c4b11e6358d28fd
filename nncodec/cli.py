"""The ``nncodec`` command line.

Errors print one line naming the file, tensor and fix, and exit non-zero;
``--debug`` shows the traceback. Nothing heavy is imported before a command
runs, so ``nncodec --help`` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPT = 130


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


def _parser() -> argparse.ArgumentParser:
    from .encode.options import OBJECTIVES, QUANTIZERS
    from .encode.presets import PRESETS, help_text

    p = argparse.ArgumentParser(
        prog="nncodec",
        description="Small files for neural-network weights. Reads safetensors, PyTorch .pt/.pth/.bin "
        "(zip and legacy) and NumPy .npz without running pickle code.",
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    e = sub.add_parser("encode", help="encode a checkpoint to a .nnc file",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Encode a checkpoint to a .nnc file: losslessly, unless a rate option "
                       "(--bits, --snr, --step, --max-error) or --preset is given.",
                       epilog=_ENCODE_EPILOG + help_text())
    e.add_argument("input", help="checkpoint: .safetensors, .pt/.pth/.bin, .npz; or a model folder (spec/FOLDERS.md)")
    e.add_argument("output", help=".nnc file to write (written atomically); a folder for a model folder")
    e.add_argument("--format", choices=["safetensors", "torch", "npz"], help="input format (default: detected from the bytes)")
    e.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE", help="add user metadata (repeatable)")
    rate = e.add_mutually_exclusive_group()
    rate.add_argument("--bits", type=float, metavar="B", help="average bits per weight over the lossy tensors")
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
    e.add_argument("--dither", action="store_true", help="subtractive dither: unbiased reconstruction")
    e.add_argument("--seed", type=int, default=0, help="dither seed (default 0)")
    _engine_args(e)
    e.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")

    d = sub.add_parser("decode", help="decode a .nnc file to a checkpoint",
                       description="Decode a .nnc file to a checkpoint. The format written is --format if given, "
                       "else the output extension, else the format the file was encoded from.")
    d.add_argument("input", help=".nnc file, or a folder nncodec encode wrote")
    d.add_argument("output", help="checkpoint to write (written atomically); a folder for an encoded folder")
    d.add_argument("--format", choices=["safetensors", "torch", "torch-legacy", "npz"], help="output format")
    d.add_argument("--salvage", action="store_true",
                   help="from a damaged or truncated file, write the tensors before the damage")
    _engine_args(d)
    d.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")

    i = sub.add_parser("info", help="list the tensors of a .nnc file",
                       description="List the tensors of a .nnc file: dtype, shape, pipeline, stored bytes, "
                       "ratio (stored / raw) and bits per value.")
    i.add_argument("input", help=".nnc file, or an encoded folder")
    i.add_argument("--json", action="store_true", help="print JSON for scripts")
    _engine_args(i)

    df = sub.add_parser("diff", help="write the update from BASE to NEW (a fine-tune delta)",
                        description="Write the difference between checkpoint NEW and checkpoint BASE as a .nnc "
                        "update that records BASE's hash (spec/UPDATES.md). Lossless (exact XOR deltas) unless a "
                        "quantizer or sparsification option is given.")
    df.add_argument("base", help="the checkpoint (or model folder) both sides hold")
    df.add_argument("new", help="the fine-tuned checkpoint")
    df.add_argument("output", help=".nnc update to write (atomically)")
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
    df.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")

    pt = sub.add_parser("patch", help="apply an update to BASE and write the result",
                        description="Apply a .nnc update written by `nncodec diff` to BASE and write the result; "
                        "refuses a BASE other than the one the update was made against.")
    pt.add_argument("base", help="the checkpoint (or model folder) the update was made against")
    pt.add_argument("update", help=".nnc update")
    pt.add_argument("output", help="checkpoint to write (atomically)")
    pt.add_argument("--format", choices=["safetensors", "torch", "torch-legacy", "npz"], help="output format")
    _engine_args(pt, threads=False)
    pt.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")

    c = sub.add_parser("compare", help="compare two checkpoints tensor by tensor",
                       description="Compare two checkpoints (any supported format, .nnc included) tensor by tensor: "
                       "SNR in dB (10·log10 Σw²/Σ(w−ŵ)²), max absolute error and relative error ‖w−ŵ‖/‖w‖.")
    c.add_argument("a", help="reference checkpoint (or model folder)")
    c.add_argument("b", help="checkpoint (or folder) to compare with it")
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
    from .encode import EncodeOptions
    from .files import encode_file

    opts = EncodeOptions.from_keywords(**{k: getattr(a, k) for k in EncodeOptions.KEYWORDS if hasattr(a, k)})
    if os.path.isdir(a.input):  # a model folder (spec/FOLDERS.md)
        from . import folders_cli

        return folders_cli.encode(a, opts)
    prog = Progress("encoding", not a.quiet)
    t0 = time.perf_counter()
    try:
        infos = encode_file(a.input, a.output, format=a.format, metadata=_parse_metadata(a.metadata), progress=prog,
                            options=opts, threads=a.threads, limits=_limits(a))
    finally:
        prog.close()
    dt = time.perf_counter() - t0
    if not a.quiet:
        raw = os.path.getsize(a.input)
        out = os.path.getsize(a.output)
        lossy = [t for t in infos if t.pipeline.array_stages]
        extra = ""
        if lossy:
            n = sum(t.size for t in lossy)
            extra = f", {len(lossy)} lossy at {8 * sum(t.stored_bytes for t in lossy) / max(n, 1):.2f} bits/weight"
        print(f"{a.input} -> {a.output}: {_human(raw)} -> {_human(out)} ({100 * out / max(raw, 1):.1f}%), "
              f"{len(infos)} tensors{extra}, {dt:.2f} s")
    return 0


def cmd_decode(a) -> int:
    from .files import decode_file

    if os.path.isdir(a.input):  # an encoded model folder (spec/FOLDERS.md)
        from . import folders_cli

        return folders_cli.decode(a)
    prog = Progress("decoding", not a.quiet)
    t0 = time.perf_counter()
    try:
        fmt = decode_file(a.input, a.output, format=a.format, progress=prog, salvage=a.salvage,
                          threads=a.threads, limits=_limits(a))
    finally:
        prog.close()
    if not a.quiet:
        print(f"{a.input} -> {a.output} ({fmt}): {_human(os.path.getsize(a.output))}, {time.perf_counter() - t0:.2f} s")
    return 0


def _entropy_bits_per_weight(levels, n_weights: int) -> float:
    """First-order empirical entropy of the symbols, spread over the tensor's weights."""
    from .entropy.stats import entropy_bits, symbol_counts

    return float(entropy_bits(symbol_counts(levels))) / n_weights


def cmd_info(a) -> int:
    import json

    from .api import open as nopen

    if os.path.isdir(a.input):  # an encoded model folder (spec/FOLDERS.md)
        from . import folders_cli

        return folders_cli.info(a)
    entropy = {}
    with nopen(a.input, limits=_limits(a), threads=a.threads) as r:
        infos = r.infos()
        md = r.metadata
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
    size = os.path.getsize(a.input)
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


def cmd_diff(a) -> int:
    from .federated.files import diff_files

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
    if os.path.isdir(a.base) or os.path.isdir(a.new):  # model folders, shard by shard (spec/FOLDERS.md)
        from . import folders_cli

        return folders_cli.diff(a, opts)
    t0 = time.perf_counter()
    diff_files(a.base, a.new, a.output, metadata=_parse_metadata(a.metadata), limits=_limits(a), **opts)
    if not a.quiet:
        print(f"{a.new} - {a.base} -> {a.output}: {_human(os.path.getsize(a.output))} "
              f"({100 * os.path.getsize(a.output) / max(os.path.getsize(a.new), 1):.1f}% of {a.new}), "
              f"{time.perf_counter() - t0:.2f} s")
    return 0


def cmd_patch(a) -> int:
    from .federated.files import patch_files

    if os.path.isdir(a.base) or os.path.isdir(a.update):  # model folders (spec/FOLDERS.md)
        from . import folders_cli

        return folders_cli.patch(a)
    t0 = time.perf_counter()
    fmt = patch_files(a.base, a.update, a.output, format=a.format, limits=_limits(a))
    if not a.quiet:
        print(f"{a.base} + {a.update} -> {a.output} ({fmt}), {time.perf_counter() - t0:.2f} s")
    return 0


def cmd_compare(a) -> int:
    import json
    import math

    from .compare import compare

    if os.path.isdir(a.a) or os.path.isdir(a.b):  # model folders, shard by shard (spec/FOLDERS.md)
        from . import folders_cli

        return folders_cli.compare(a)
    diffs, overall, only_a, only_b = compare(a.a, a.b, limits=_limits(a))

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
        print(f"only in {a.a}: {', '.join(only_a)}")
    if only_b:
        print(f"only in {a.b}: {', '.join(only_b)}")
    return 0


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
    from .errors import NNCodecError, UsageError
    from .kernels import enable_compile_notice

    enable_compile_notice()  # one stderr line when a first run compiles kernels
    cmd = {"encode": cmd_encode, "decode": cmd_decode, "info": cmd_info, "compare": cmd_compare,
           "diff": cmd_diff, "patch": cmd_patch}[a.command]
    try:
        return cmd(a)
    except KeyboardInterrupt:
        if a.debug:
            raise
        print("nncodec: interrupted; no output file was written", file=sys.stderr)
        return EXIT_INTERRUPT
    except UsageError as e:
        if a.debug:
            raise
        print(f"nncodec: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except NNCodecError as e:
        if a.debug:
            raise
        print(f"nncodec: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as e:
        if a.debug:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"nncodec: error: {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        if a.debug:
            raise
        print("nncodec: error: out of memory", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
