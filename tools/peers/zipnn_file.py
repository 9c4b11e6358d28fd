"""ZipNN file to file, the way its users run it on a checkpoint.

Run with the ``zipnn`` peer venv's python:

    python zipnn_file.py compress   IN OUT   --dtype bfloat16|float32|float16 [--threads T]
    python zipnn_file.py decompress IN OUT   [--threads T]
    python zipnn_file.py compress-dir   DIR OUT_DIR --dtype ... [--threads T]
    python zipnn_file.py decompress-dir DIR OUT_DIR [--threads T]

Reads the whole file's bytes, compresses a copy (ZipNN 0.5.4's compress()
rewrites its input in place) with ``ZipNN(input_format="byte",
bytearray_dtype=DTYPE, threads=T)`` and writes the result; decompress reads and
writes back. The ``-dir`` forms do every ``*.safetensors`` file of DIR (sorted)
in one process, writing ``NAME.znn`` and back ``NAME``. Prints one JSON line
with the in-process seconds (after imports) and the bytes written.
"""

import argparse
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["compress", "decompress", "compress-dir", "decompress-dir"])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from zipnn import ZipNN

    zn = ZipNN(input_format="byte", bytearray_dtype=args.dtype, threads=args.threads)
    t0 = time.perf_counter()
    if args.mode.endswith("-dir"):
        os.makedirs(args.dst, exist_ok=True)
        if args.mode == "compress-dir":
            pairs = [(f, f + ".znn") for f in sorted(os.listdir(args.src)) if f.endswith(".safetensors")]
        else:
            pairs = [(f, f[:-4]) for f in sorted(os.listdir(args.src)) if f.endswith(".znn")]
        pairs = [(os.path.join(args.src, a), os.path.join(args.dst, b)) for a, b in pairs]
    else:
        pairs = [(args.src, args.dst)]
    if not pairs:
        sys.exit(f"zipnn_file: nothing to do in {args.src}")
    written = 0
    for src, dst in pairs:
        with open(src, "rb") as f:
            buf = bytearray(f.read())
        out = zn.compress(buf) if args.mode.startswith("compress") else zn.decompress(buf)
        del buf
        with open(dst, "wb") as f:
            f.write(out)
        written += len(out)
        del out
    print(json.dumps({"seconds": time.perf_counter() - t0, "bytes_written": written, "files": len(pairs)}))


if __name__ == "__main__":
    main()
