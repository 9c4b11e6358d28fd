"""Federated digits: uplink bytes and final accuracy of FedAvg with and without nncodec updates.

    python tools/bench_federated.py                 # prints the table, rewrites docs/BENCHMARKS.md
    python tools/bench_federated.py --rounds 5 --no-docs
    python tools/bench_federated.py --flower        # also one real Flower run (server + clients)

The run is the task of examples/flower_digits (an MLP 64-256-256-10, 85 002
float32 weights; scikit-learn's digits split IID over ``--clients`` clients; two
local epochs of SGD per round). FedAvg is simulated in one process, so each
setting sees exactly the same training randomness: every client trains from the
round's global model, its model is coded with :func:`nncodec.federated.encode_update`
against that global model (with error feedback and a seed per client and
round), decoded with :func:`~nncodec.federated.decode_update`, and the server
averages the decoded models. Uplink bytes are the update bytes (whole .nnc
streams: headers, metadata and base hash included) against 4 bytes per weight.
``--flower`` repeats the plain and the default nncodec setting as real Flower
processes on 127.0.0.1 (examples/flower_digits/run.py).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "flower_digits")
for p in (ROOT, EXAMPLE, os.path.join(ROOT, "tools")):
    if p not in sys.path:
        sys.path.insert(0, p)

#: (label, encode_update options); None is plain float32 FedAvg
SETTINGS = [
    ("FedAvg, float32 (no nncodec)", None),
    ("nncodec lossless (xor deltas)", {}),
    ("scalar, dither, step = 1 x RMS", {"quantizer": "scalar", "rel_step": 1.0}),
    ("scalar, dither, step = 2 x RMS", {"quantizer": "scalar", "rel_step": 2.0}),
    ("stochastic rounding, step = 2 x RMS", {"quantizer": "stochastic", "rel_step": 2.0}),
    ("3LC, s = 1", {"quantizer": "3lc"}),
    ("top-k 5 %, stochastic, step = 2 x RMS", {"topk": 0.05, "rel_step": 2.0}),
    ("top-k 2 %, stochastic, step = 1 x RMS", {"topk": 0.02, "rel_step": 1.0}),
]


def simulate(opts, *, clients: int, rounds: int, epochs: int, seed: int = 0) -> dict:
    import task

    from nncodec.federated import ErrorFeedback, decode_update, encode_update

    _, x_test, _, y_test = task.load_data()
    parts = [task.partition(i, clients) for i in range(clients)]
    g = task.init_model(seed)
    raw = sum(v.nbytes for v in g.values())
    efs = [ErrorFeedback() for _ in range(clients)]
    per_round = []
    t0 = time.perf_counter()
    for r in range(rounds):
        models, up = [], 0
        for i, (x, y) in enumerate(parts):
            m = task.train(g, x, y, epochs=epochs, seed=1000 * (r + 1) + i)
            if opts is None:
                models.append(m)
                up += raw
                continue
            data = encode_update(m, g, error_feedback=efs[i], seed=1_000_003 * r + i, **opts)
            up += len(data)
            models.append(decode_update(data, g))
        g = {k: np.mean([m[k] for m in models], axis=0).astype(np.float32) for k in g}
        per_round.append(up)
    loss, acc = task.evaluate(g, x_test, y_test)
    return {"uplink": sum(per_round), "per_round": per_round, "accuracy": acc, "loss": loss,
            "raw": raw * clients * rounds, "seconds": time.perf_counter() - t0}


def flower_runs(clients: int, rounds: int, epochs: int) -> list:
    import tempfile

    import run

    out = []
    with tempfile.TemporaryDirectory() as d:
        for mode in ("plain", "topk"):
            out.append(run.run_once(mode, clients=clients, rounds=rounds, epochs=epochs, timeout=600, workdir=d))
    return out


def table(rows, base_acc) -> str:
    lines = ["| setting | uplink bytes | bytes / round / client | less than float32 | accuracy | Δ accuracy |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, r, n in rows:
        lines.append(f"| {label} | {r['uplink']:,} | {r['uplink'] // n:,} | {r['raw'] / r['uplink']:.1f}x | "
                     f"{100 * r['accuracy']:.2f} % | {100 * (r['accuracy'] - base_acc):+.2f} |")
    return "\n".join(lines)


def summary(rows, base_acc) -> str:
    """Sentences drawn from the measured rows (no numbers written by hand)."""
    ok = [(label, r) for label, r, _ in rows[1:]
          if r["raw"] / r["uplink"] >= 20 and r["accuracy"] >= base_acc - 0.01]
    best = max(ok, key=lambda t: t[1]["raw"] / t[1]["uplink"]) if ok else None
    text = ("One test image is 0.22 points of accuracy and each row is one training run, so differences "
            "of a few tenths are noise. ")
    if ok:
        text += (f"Settings with at least 20x less uplink than float32 and at most one point of accuracy "
                 f"lost: {'; '.join(label for label, _ in ok)}. The smallest of them, {best[0]}, sends "
                 f"{best[1]['raw'] / best[1]['uplink']:.0f}x less.")
    else:
        text += "No setting reached 20x less uplink within one point of accuracy in this run."
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--flower", action="store_true", help="also run the Flower example (plain and top-k)")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/BENCHMARKS.md")
    args = ap.parse_args(argv)
    import _bench_common as bc

    rows = []
    for label, opts in SETTINGS:
        r = simulate(opts, clients=args.clients, rounds=args.rounds, epochs=args.epochs)
        rows.append((label, r, args.rounds * args.clients))
        print(f"{label:40s} uplink {r['uplink']:>10,} B  {r['raw'] / r['uplink']:6.1f}x  "
              f"accuracy {100 * r['accuracy']:.2f} %  ({r['seconds']:.1f} s)", flush=True)
    base_acc = rows[0][1]["accuracy"]
    md = bc.machine_info()
    body = [
        "## Federated updates",
        "",
        f"Written by `tools/bench_federated.py` on {datetime.date.today().isoformat()}. To re-run:",
        "",
        "```sh",
        f"python tools/bench_federated.py --rounds {args.rounds} --clients {args.clients} --epochs {args.epochs}"
        + (" --flower" if args.flower else ""),
        "```",
        "",
        f"FedAvg on scikit-learn's digits (the task of `examples/flower_digits`: an MLP 64-256-256-10, "
        f"85 002 float32 weights = 340 008 bytes; {args.clients} clients with IID shares of the 1 347 "
        f"training images; {args.epochs} local epochs of SGD per round; {args.rounds} rounds; accuracy of "
        f"the final global model on the 450 test images). Every compressed setting sends each client's "
        f"trained model as an nncodec update against the round's global model, with error feedback and "
        f"a seed per client and round; uplink bytes are whole update streams (record headers, metadata "
        f"and base hash included). Machine: {md['cpu']}, {md['usable_cores']} cores.",
        "",
        table(rows, base_acc),
        "",
        summary(rows, base_acc),
    ]
    if args.flower:
        fr = flower_runs(args.clients, args.rounds, args.epochs)
        import run

        body += ["", "The same task over gRPC on 127.0.0.1 (a Flower server and "
                 f"{args.clients} client processes, `examples/flower_digits/run.py --rounds {args.rounds}`; "
                 "parameter payload bytes as counted by the server; the nncodec run also codes the "
                 "downlink losslessly):", "", "```", run.report(fr), "```"]
    text = "\n".join(body)
    print()
    print(text)
    if not args.no_docs:
        bc.rewrite_doc_section("federated", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
