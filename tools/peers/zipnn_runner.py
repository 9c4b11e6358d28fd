"""Time ZipNN on arrays stored by tools/_bench_common.write_array_dir.

Run with the ``zipnn`` peer venv's python (tools/peers/setup_peers.sh zipnn):

    python zipnn_runner.py ARRAY_DIR [--runs N] [--layouts per-tensor,concat] [--cpu K]

Every array must have the same floating dtype (float32, bfloat16 or float16).
``per-tensor`` compresses each array with its own compress() call and sums
sizes and times; ``concat`` compresses the arrays' bytes joined in manifest
order as one buffer. ZipNN runs with threads=1. compress() rewrites its input
buffer in place (ZipNN 0.5.4), so each call gets a fresh copy, made outside the
timed region. Times are wall (perf_counter) and CPU (process_time) seconds per
run, summed over calls. Every decompression is compared with the original
bytes after the timed loop; a mismatch exits non-zero. ``--cpu K`` pins the
process to CPU K. Prints one JSON line.
"""

import argparse
import json
import os
import statistics
import sys
import time
from importlib.metadata import version


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("array_dir")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--layouts", default="per-tensor,concat")
    ap.add_argument("--cpu", type=int)
    args = ap.parse_args()

    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})

    import torch
    from zipnn import ZipNN

    torch.set_num_threads(1)

    with open(os.path.join(args.array_dir, "manifest.json")) as f:
        entries = json.load(f)["arrays"]
    dtypes = {e["dtype"] for e in entries}
    if len(dtypes) != 1 or next(iter(dtypes)) not in ("float32", "bfloat16", "float16"):
        sys.exit(f"zipnn_runner: need one floating dtype, found {sorted(dtypes)}")
    dtype = dtypes.pop()
    bufs = []
    for e in entries:
        with open(os.path.join(args.array_dir, e["file"]), "rb") as f:
            bufs.append(f.read())

    zn = ZipNN(input_format="byte", bytearray_dtype=dtype, threads=1)
    out = {"zipnn": version("zipnn"), "torch": torch.__version__, "dtype": dtype, "layouts": {}}
    for layout in args.layouts.split(","):
        if layout == "per-tensor":
            items = bufs
        elif layout == "concat":
            items = [b"".join(bufs)]
        else:
            sys.exit(f"zipnn_runner: unknown layout {layout!r}")
        enc_times, dec_times, enc_cpu, dec_cpu, size = [], [], [], [], None
        for _ in range(args.runs):
            copies = [bytearray(b) for b in items]
            c0, t0 = time.process_time(), time.perf_counter()
            blobs = [zn.compress(c) for c in copies]
            enc_times.append(time.perf_counter() - t0)
            enc_cpu.append(time.process_time() - c0)
            del copies
            c0, t0 = time.process_time(), time.perf_counter()
            backs = [zn.decompress(blob) for blob in blobs]
            dec_times.append(time.perf_counter() - t0)
            dec_cpu.append(time.process_time() - c0)
            for i, back in enumerate(backs):
                if bytes(back) != items[i]:
                    sys.exit(f"zipnn_runner: round trip of item {i} ({layout}) is not bit-exact")
            del backs
            s = sum(len(b) for b in blobs)
            if size is not None and s != size:
                sys.exit(f"zipnn_runner: compressed size changed between runs ({size} -> {s})")
            size = s
        out["layouts"][layout] = {
            "original_bytes": sum(len(b) for b in items),
            "compressed_bytes": size,
            "calls": len(items),
            "encode_s": enc_times,
            "decode_s": dec_times,
            "encode_cpu_s": enc_cpu,
            "decode_cpu_s": dec_cpu,
            "encode_s_median": statistics.median(enc_times),
            "decode_s_median": statistics.median(dec_times),
            "bit_exact": True,
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
