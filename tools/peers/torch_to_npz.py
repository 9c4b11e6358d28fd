"""Convert a PyTorch checkpoint to .npz (run with a peer venv's python, which has torch).

    python torch_to_npz.py IN.pth OUT.npz

Loads with ``weights_only=True`` (no pickle code runs), flattens a top-level
``{"state_dict": ...}`` wrapper, keeps every tensor under its state-dict name
in file order and stores each as a NumPy array of the same dtype (bfloat16 as
raw uint16 bits, with the name suffixed ``::bfloat16``). Prints a JSON summary.
"""

import json
import sys

import numpy as np
import torch


def main():
    src, dst = sys.argv[1], sys.argv[2]
    obj = torch.load(src, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise SystemExit(f"{src}: top level is {type(obj).__name__}, not a state dict")
    out = {}
    for name, t in obj.items():
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().contiguous()
        if t.dtype == torch.bfloat16:
            out[name + "::bfloat16"] = t.view(torch.uint16).numpy()
        else:
            out[name] = t.numpy()
    with open(dst, "wb") as f:
        np.savez(f, **out)
    print(json.dumps({"tensors": len(out), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
