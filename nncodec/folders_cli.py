"""The command line for model folders: what ``nncodec encode/decode/info/compare/diff/patch``
do when given a folder (see :mod:`nncodec.folders` and spec/FOLDERS.md)."""

from __future__ import annotations

import json
import math
import os
import sys
import time

from .errors import UsageError


def _cli():
    from . import cli

    return cli


def _run_options(a) -> dict:
    """Engine options the single-file commands take, passed on to every shard."""
    out = {}
    threads = getattr(a, "threads", None)
    if threads is not None:
        out["threads"] = threads
    limits = getattr(_cli(), "_limits", None)  # --max-tensor-size, where the command has it
    if limits is not None and getattr(a, "max_tensor_size", None) is not None:
        out["limits"] = limits(a)
    return out


def _both_folders(*paths) -> None:
    dirs = [os.path.isdir(p) for p in paths]
    if not all(dirs):
        files = [p for p, d in zip(paths, dirs) if not d]
        raise UsageError(f"{files[0]}: is not a folder, but {paths[dirs.index(True)]} is; "
                         f"give folders for every checkpoint argument, or files for every one")


def _tree_bytes(path) -> int:
    total = 0
    for d, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(d, f)) for f in files)
    return total


def encode(a, opts) -> int:
    from .folders import encode_folder

    cli = _cli()
    if getattr(a, "format", None):
        raise UsageError("--format names one file's format; a folder's shards are each detected from their bytes, "
                         "so leave it out")
    prog = cli.Progress("encoding", not a.quiet)
    t0 = time.perf_counter()
    try:
        doc = encode_folder(a.input, a.output, progress=prog, options=opts,
                            metadata=cli._parse_metadata(a.metadata), **_run_options(a))
    finally:
        prog.close()
    dt = time.perf_counter() - t0
    names = [n for g in doc["groups"] for n in g["weight_map"]]
    cli.warn_unmatched(a, names)
    raw, out = _tree_bytes(a.input), _tree_bytes(a.output)
    shards = sum(len(g["shards"]) for g in doc["groups"])
    lossy = None
    if a.json:
        from .folders import folder_info

        lossy = folder_info(a.output)["total"]["lossy"]
    cli.report(a, {"command": "encode", "folder": True, "input": a.input, "output": a.output, "input_bytes": raw,
                   "output_bytes": out, "ratio": round(out / raw, 6) if raw else None, "shards": shards,
                   "tensors": len(names), "lossy_tensors": lossy, "lossless": not lossy, "rate": cli.rate_of(a),
                   "files": len(doc["files"]), "seconds": round(dt, 3)},
               f"{a.input} -> {a.output}: {cli._human(raw)} -> {cli._human(out)} ({100 * out / max(raw, 1):.1f}%), "
               f"{shards} shards, {len(names)} tensors, {len(doc['files'])} other files carried, {dt:.2f} s")
    return 0


def decode(a) -> int:
    from .folders import decode_folder

    cli = _cli()
    if getattr(a, "salvage", False):
        raise UsageError("--salvage works on one .nnc file; decode the damaged shard's .nnc file alone with it")
    prog = cli.Progress("decoding", not a.quiet)
    t0 = time.perf_counter()
    try:
        doc = decode_folder(a.input, a.output, format=a.format, progress=prog, **_run_options(a))
    finally:
        prog.close()
    dt = time.perf_counter() - t0
    shards = sum(len(g["shards"]) for g in doc["groups"])
    out = _tree_bytes(a.output)
    cli.report(a, {"command": "decode", "folder": True, "input": a.input, "output": a.output, "format": a.format,
                   "input_bytes": _tree_bytes(a.input), "output_bytes": out, "shards": shards,
                   "tensors": sum(len(g["weight_map"]) for g in doc["groups"]), "files": len(doc["files"]),
                   "seconds": round(dt, 3)},
               f"{a.input} -> {a.output}: {shards} shards, {len(doc['files'])} other files, "
               f"{cli._human(out)}, {dt:.2f} s")
    return 0


def info(a) -> int:
    from .folders import folder_info

    cli = _cli()
    s = folder_info(a.input)
    if a.json:
        json.dump(s, sys.stdout, indent=1)
        print()
        return 0
    head = ["shard", "format", "tensors", "lossy", "raw", "stored", "ratio", ".nnc file"]
    pct = lambda x, y: f"{100 * x / y:.1f}%" if y else "-"
    rows = [[r["file"], r["format"], str(r["tensors"]), str(r["lossy"]), cli._human(r["raw_bytes"]),
             cli._human(r["stored_bytes"]), pct(r["stored_bytes"], r["raw_bytes"]), cli._human(r["nnc_bytes"])]
            for r in s["shards"]]
    t = s["total"]
    rows.append(["(total)", "", str(t["tensors"]), str(t["lossy"]), cli._human(t["raw_bytes"]),
                 cli._human(t["stored_bytes"]), pct(t["stored_bytes"], t["raw_bytes"]), cli._human(t["nnc_bytes"])])
    widths = [max(len(head[j]), *(len(r[j]) for r in rows)) for j in range(len(head))]
    line = lambda r: "  ".join(c.rjust(w) if j >= 2 else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths)))
    print(line(head))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))
    kind = "update folder (nncodec diff)" if s["kind"] == "update" else "encoded model folder"
    print(f"\n{kind}: {len(s['shards'])} shards, {t['tensors']} tensors, {cli._human(t['raw_bytes'])} raw -> "
          f"{cli._human(t['nnc_bytes'])} in .nnc files; {t['files']} other files ({cli._human(t['files_bytes'])}) "
          f"carried as they are; per tensor: nncodec info {os.path.join(a.input, s['shards'][0]['nnc'])}")
    return 0


def compare(a) -> int:
    from .folders import compare_files, compare_folders

    _both_folders(a.a, a.b)
    shards, overall, only_a, only_b = compare_folders(a.a, a.b, **{k: v for k, v in _run_options(a).items()
                                                                   if k == "limits"})
    files = compare_files(a.a, a.b)

    def num(x):
        return None if isinstance(x, float) and math.isinf(x) else x

    def row(d):
        return {"name": d.name, "dtype": d.dtype, "shape": list(d.shape), "snr_db": num(d.snr_db),
                "max_abs_error": d.max_abs_error, "rel_error": d.rel_error, "exact": d.exact}

    if a.json:
        json.dump({"shards": [{"file": f, "tensors": [row(d) for d in ds]} for f, ds in shards],
                   "overall": {k: v for k, v in row(overall).items() if k not in ("name", "dtype", "shape")},
                   "only_in_a": only_a, "only_in_b": only_b, "files": files}, sys.stdout, indent=1)
        print()
        return 0
    head = ["shard", "name", "dtype", "shape", "SNR dB", "max |err|", "rel err"]
    fmt_snr = lambda x: "exact" if math.isinf(x) and x > 0 else f"{x:.2f}"
    table = []
    for f, ds in shards:
        for i, d in enumerate(ds):
            table.append([f if i == 0 else "", d.name, d.dtype, "x".join(map(str, d.shape)) or "()",
                          "exact" if d.exact else fmt_snr(d.snr_db), f"{d.max_abs_error:.3g}", f"{d.rel_error:.3g}"])
    table.append(["(all)", "", "", "", "exact" if overall.exact else fmt_snr(overall.snr_db),
                  f"{overall.max_abs_error:.3g}", f"{overall.rel_error:.3g}"])
    widths = [max(len(head[j]), *(len(r[j]) for r in table)) for j in range(len(head))]
    line = lambda r: "  ".join(c.rjust(w) if j >= 4 else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths)))
    print(line(head))
    print("  ".join("-" * w for w in widths))
    for r in table:
        print(line(r))
    if only_a:
        print(f"only in {a.a}: {', '.join(only_a)}")
    if only_b:
        print(f"only in {a.b}: {', '.join(only_b)}")
    print(f"other files: {len(files['same'])} identical" +
          "".join(f"; {label} {', '.join(files[k])}" for k, label in
                  (("differ", "differ:"), ("only_in_a", f"only in {a.a}:"), ("only_in_b", f"only in {a.b}:"))
                  if files[k]))
    return 0


def diff(a, opts: dict) -> int:
    from .folders import diff_folders

    cli = _cli()
    _both_folders(a.base, a.new)
    t0 = time.perf_counter()
    run = {k: v for k, v in _run_options(a).items() if k == "limits"}
    prog = cli.Progress("diffing", not a.quiet)
    try:
        doc = diff_folders(a.base, a.new, a.output, metadata=cli._parse_metadata(a.metadata), progress=prog,
                           **run, **opts)
    finally:
        prog.close()
    dt = time.perf_counter() - t0
    out, new = _tree_bytes(a.output), _tree_bytes(a.new)
    shards = sum(len(g["shards"]) for g in doc["groups"])
    cli.report(a, {"command": "diff", "folder": True, "base": a.base, "new": a.new, "output": a.output,
                   "base_bytes": _tree_bytes(a.base), "new_bytes": new, "output_bytes": out,
                   "ratio": round(out / new, 6) if new else None, "shards": shards,
                   "tensors": sum(len(g["weight_map"]) for g in doc["groups"]), "lossless": cli.diff_lossless(opts),
                   "options": opts, "seconds": round(dt, 3)},
               f"{a.new} - {a.base} -> {a.output}: {cli._human(out)} ({100 * out / max(new, 1):.1f}% of {a.new}), "
               f"{shards} shards, {dt:.2f} s")
    return 0


def patch(a) -> int:
    from .folders import patch_folders

    _both_folders(a.base, a.update)
    t0 = time.perf_counter()
    run = {k: v for k, v in _run_options(a).items() if k == "limits"}
    prog = _cli().Progress("patching", not a.quiet)
    try:
        doc = patch_folders(a.base, a.update, a.output, format=a.format, progress=prog, **run)
    finally:
        prog.close()
    dt = time.perf_counter() - t0
    shards = sum(len(g["shards"]) for g in doc["groups"])
    _cli().report(a, {"command": "patch", "folder": True, "base": a.base, "update": a.update, "output": a.output,
                      "format": a.format, "base_bytes": _tree_bytes(a.base), "update_bytes": _tree_bytes(a.update),
                      "output_bytes": _tree_bytes(a.output), "shards": shards,
                      "tensors": sum(len(g["weight_map"]) for g in doc["groups"]), "seconds": round(dt, 3)},
                  f"{a.base} + {a.update} -> {a.output}: {shards} shards, {dt:.2f} s")
    return 0
