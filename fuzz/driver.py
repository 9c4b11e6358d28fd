"""A random-mutation fuzz driver for the harnesses, with no dependency beyond nncodec.

It runs a harness's ``TestOneInput`` on mutations of its seed corpus,
deterministically for a given ``--seed``, until a wall-time or iteration
bound. No coverage instrumentation: instead, an input that makes the decoder
refuse with a message not seen before (digits ignored) joins the pool, which
walks the fuzzer past one check after another. A watchdog timer turns a hang
into a finding; ``--max-memory-mb`` caps the address space so that an
unbounded allocation shows up as a MemoryError finding instead of swapping.

    python -m fuzz.driver container_crc --seconds 60 --artifacts build/fuzz/crashes
    python -m fuzz.driver checkpoints --replay tests/regressions/some-input.bin

Prints one JSON line with the counts at the end (tools/fuzz.py reads it).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import random
import re
import resource
import signal
import sys
import time
import traceback

from nncodec.errors import NNCodecError

INTERESTING = (0, 1, 2, 7, 8, 15, 16, 24, 31, 32, 63, 64, 127, 128, 255, 256, 4095, 4096, 65535, 65536,
               2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40, 2**48, 2**62, 2**63 - 1, 2**63, 2**64 - 1)

TOKENS = (
    b'"shape":[1099511627776]', b'"shape":[4294967296,4294967296]', b'"shape":[]', b'"shape":[0]', b'[-1]',
    b'1e309', b'NaN', b'-Infinity', b'1.5', b'-0', b'99999999999999999999999', b'null', b'true', b'{}', b'[]',
    b'"dtype":"bool"', b'"dtype":"float64"', b'"dtype":"complex64"', b'"name":"x"', b'"target":"x"',
    b'"pipeline":[{"name":"zstd"}]', b'{"name":"raw"}', b'{"name":"planes","configuration":{"transform":"none","level":3}}',
    b'{"name":"ans","configuration":{"precision":16,"states":32}}', b'{"name":"zerorun"}', b'{"name":"scalar","configuration":{"step":1e308}}',
    b'"tensors":{}', b'"aliases":{"a":"a"}', b'"metadata":16', b'"configuration":{}', b'\\ud800', b'"\xff"',
    b'NR', b'NRT\x00', b'NRI\x00', b'NRA\x00', b'NRM\x00', b'\x89END\r\n\x1a\n', b'\x89NNC\r\n\x1a\n',
    # pickle opcodes: globals, REDUCE, huge memo indices, deep nesting
    b'cos\nsystem\n', b'cbuiltins\neval\n', b'csubprocess\nPopen\n', b'ccopyreg\n_reconstructor\n',
    b'ctorch._utils\n_rebuild_tensor_v2\n', b'\x8c\x05posix\x8c\x06system\x93', b'R', b'b', b'r\xf0\xff\xff\x3f',
    b'j\xff\xff\xff\x7f', b'((((((((((((((((', b']]]]]]]]]]]]', b'\x80\x02', b'Q', b'.',
    # zip and npy structures
    b'PK\x03\x04', b'PK\x01\x02', b'PK\x05\x06', b'PK\x06\x06', b'\x93NUMPY\x01\x00',
    b"{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776,), }",
    b"'shape': (4294967296, 4294967296)", b"'descr': '|O'", b"'descr': '<c16'",
    b'"data_offsets":[0,18446744073709551615]', b'"__metadata__":{"a":1}', b'"F8_E4M3"', b'"BF16"',
)


class Hang(BaseException):
    """Raised by the watchdog inside a harness call that ran past its time limit."""


def _on_alarm(signum, frame):
    raise Hang()


def mutate(rng: random.Random, data: bytes, pool: list) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
        op = rng.randrange(11)
        n = len(b)
        if op == 0 and n:  # flip a bit
            i = rng.randrange(n)
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # interesting byte
            b[rng.randrange(n)] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2 and n:  # interesting little-endian integer
            w = rng.choice((2, 4, 8))
            v = rng.choice(INTERESTING + (n, n - 1, n + 8, rng.randrange(n + 1)))
            if rng.random() < 0.2:
                v = -v
            i = rng.randrange(n)
            b[i:i + w] = (v % (1 << (8 * w))).to_bytes(w, "little")
        elif op == 3 and n:  # delete a chunk
            i = rng.randrange(n)
            del b[i:i + rng.choice((1, 2, 4, 8, rng.randrange(1, 64)))]
        elif op == 4:  # insert random bytes
            i = rng.randrange(n + 1)
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.choice((1, 2, 4, 8, 16))))
        elif op == 5 and n:  # duplicate a chunk of itself
            i, j = sorted(rng.randrange(n + 1) for _ in range(2))
            k = rng.randrange(n + 1)
            b[k:k] = b[i:j][:4096]
        elif op == 6 and pool:  # splice with another input
            other = rng.choice(pool)
            if other:
                i = rng.randrange(n + 1)
                j = rng.randrange(len(other) + 1)
                b = b[:i] + other[j:] if rng.random() < 0.5 else bytearray(other[:j]) + b[i:]
        elif op == 7 and n:  # truncate
            del b[rng.randrange(n):]
        elif op == 8:  # dictionary token, inserted or overwriting
            t = rng.choice(TOKENS)
            i = rng.randrange(n + 1)
            if rng.random() < 0.5:
                b[i:i] = t
            else:
                b[i:i + len(t)] = t
        elif op == 9:  # a number in text (JSON, npy header) replaced
            m = [x for x in re.finditer(rb"-?\d+", bytes(b[:65536]))]
            if m:
                x = rng.choice(m)
                v = rng.choice(INTERESTING + (-1, 0, 3))
                b[x.start():x.end()] = str(v if rng.random() < 0.8 else -v).encode()
        elif op == 10 and n:  # repeat one byte many times
            i = rng.randrange(n)
            b[i:i] = bytes([b[i]]) * rng.choice((16, 256, 4096))
    return bytes(b[: 1 << 20])


_DIGITS = re.compile(r"\d+|'[^']*'|\"[^\"]*\"")


def _feature(e: BaseException) -> str:
    return type(e).__name__ + ":" + _DIGITS.sub("#", str(e))[:160]


def _finding_key(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    frames = [f for f in tb if "nncodec" in f.filename] or tb
    where = f"{os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else "?"
    return f"{type(e).__name__}@{where}"


def load_harness(name: str):
    return importlib.import_module(f"fuzz.fuzz_{name}").TestOneInput


def call(fn, data: bytes, timeout: float):
    """Run one input; return None or the exception it raised (Hang on timeout)."""
    if timeout:
        signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        fn(data)
    except NNCodecError:  # harnesses catch these; a leak is still a refusal, not a finding
        return None
    except (Exception, Hang, MemoryError, RecursionError) as e:
        return e
    finally:
        if timeout:
            signal.setitimer(signal.ITIMER_REAL, 0)
    return None


def limit_memory(mb: int) -> None:
    """Cap the address space at the current size plus ``mb`` MiB."""
    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * resource.getpagesize()
    cap = vm + (mb << 20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def run(harness: str, *, seconds: float = 10.0, iters: int = 10**9, seed: int = 0, corpus=(), artifacts=None,
        timeout: float = 10.0, verbose: bool = False) -> dict:
    from fuzz.corpus import seeds

    fn = load_harness(harness)
    signal.signal(signal.SIGALRM, _on_alarm)
    _capture_refusals()
    pool = seeds(harness) + [bytes(c) for c in corpus]
    rng = random.Random(seed)
    findings: dict = {}
    features: set = set()

    def record(data, e):
        key = _finding_key(e)
        if key not in findings:
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))[-4000:]
            findings[key] = {"key": key, "input": data, "error": f"{type(e).__name__}: {str(e)[:300]}", "traceback": tb}
            if artifacts:
                os.makedirs(artifacts, exist_ok=True)
                p = os.path.join(artifacts, f"{harness}-{hashlib.sha1(data).hexdigest()[:12]}.bin")
                with open(p, "wb") as f:
                    f.write(data)
                findings[key]["path"] = p
            if verbose:
                print(f"[{harness}] finding {key}: {findings[key]['error']}", file=sys.stderr)

    # the seeds first, without a watchdog: kernels compile on first use
    execs = 0
    for s in list(pool):
        e = call(fn, s, 0)
        execs += 1
        if e is not None:
            record(s, e)
    start = time.monotonic()
    deadline = start + seconds
    slowest = 0.0
    while execs < iters and time.monotonic() < deadline:
        data = mutate(rng, rng.choice(pool), pool)
        _last_feature.clear()
        t0 = time.perf_counter()
        e = call(fn, data, timeout)
        slowest = max(slowest, time.perf_counter() - t0)
        execs += 1
        if e is not None:
            record(data, e)
            continue
        # new refusal message -> keep the input (cheap stand-in for coverage feedback)
        fn_feature = _last_feature.pop("f", None)
        if fn_feature and fn_feature not in features and len(pool) < 5000:
            features.add(fn_feature)
            pool.append(data)
    return {
        "harness": harness,
        "engine": "driver",
        "seed": seed,
        "executions": execs,
        "seconds": round(time.monotonic() - start, 2),
        "pool": len(pool),
        "slowest_input_s": round(slowest, 3),
        "findings": [{k: v for k, v in f.items() if k != "input"} for f in findings.values()],
        "_inputs": [f["input"] for f in findings.values()],
    }


_last_feature: dict = {}


def _capture_refusals():
    """Wrap NNCodecError.__init__ so the driver learns the message of each refusal."""
    orig = NNCodecError.__init__
    if getattr(orig, "_fuzz_wrapped", False):
        return

    def init(self, *a, **kw):
        orig(self, *a, **kw)
        _last_feature["f"] = _feature(self)

    init._fuzz_wrapped = True
    NNCodecError.__init__ = init


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fuzz.driver", description=__doc__.splitlines()[0])
    ap.add_argument("harness", help="a harness name, or several separated by commas")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--iters", type=int, default=10**9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--corpus", help="a folder of extra inputs")
    ap.add_argument("--artifacts", help="folder for the inputs of findings")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds one input may take")
    ap.add_argument("--max-memory-mb", type=int, default=0, help="address-space headroom (0: no cap)")
    ap.add_argument("--replay", nargs="*", help="run these inputs once and report")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    if args.max_memory_mb:
        limit_memory(args.max_memory_mb)
    if args.replay is not None:
        fn = load_harness(args.harness)
        signal.signal(signal.SIGALRM, _on_alarm)
        bad = 0
        for p in args.replay:
            with open(p, "rb") as f:
                e = call(fn, f.read(), args.timeout)
            print(f"{p}: {'ok' if e is None else _finding_key(e) + ' ' + str(e)[:200]}")
            bad += e is not None
        return 1 if bad else 0
    corpus = []
    if args.corpus and os.path.isdir(args.corpus):
        for n in sorted(os.listdir(args.corpus)):
            with open(os.path.join(args.corpus, n), "rb") as f:
                corpus.append(f.read())
    found = 0
    for h in args.harness.split(","):
        stats = run(h, seconds=args.seconds, iters=args.iters, seed=args.seed, corpus=corpus,
                    artifacts=args.artifacts, timeout=args.timeout, verbose=args.verbose)
        stats.pop("_inputs")
        print(json.dumps(stats), flush=True)
        found += len(stats["findings"])
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
