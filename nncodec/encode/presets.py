"""The presets: one word for a set of lossy settings (no numpy here: ``nncodec --help`` reads it).

README's presets table and the ``nncodec encode --help`` text are rendered from
:data:`PRESETS` by :func:`markdown_table` and :func:`help_text`, so they cannot drift
from the code (tests/test_lossy.py checks README).
"""

from __future__ import annotations

PRESETS = {
    #  preset: default bits when no rate is given, entropy coders tried, quantization
    "fast": {"bits": 6.0, "coders": ("huffman",), "trellis": False},
    "balanced": {"bits": 4.0, "coders": ("ans", "zerorun", "huffman"), "trellis": False},
    "small": {"bits": 3.0, "coders": ("cabac",), "trellis": True},
}
DEFAULT_PRESET = "balanced"


def _describe(name: str) -> tuple:
    p = PRESETS[name]
    quant = ("trellis-coded quantization (scalar when --step, --max-error, --dither or a lattice is asked for)"
             if p["trellis"] else "the chosen quantizer (scalar by default)")
    coders = " + ".join(p["coders"]) if len(p["coders"]) == 1 else "smallest of " + ", ".join(p["coders"])
    return f"{p['bits']:g}", quant, coders


def markdown_table() -> str:
    """The presets as a Markdown table (README.md)."""
    rows = ["| preset | default bits/weight | quantization | entropy coder |", "|---|---|---|---|"]
    for name in PRESETS:
        bits, quant, coders = _describe(name)
        rows.append(f"| `{name}`{' (default)' if name == DEFAULT_PRESET else ''} | {bits} | {quant} | {coders} |")
    return "\n".join(rows) + "\n"


def help_text() -> str:
    """The presets as plain lines (``nncodec encode --help``)."""
    lines = ["presets (a rate option overrides the preset's default rate):"]
    for name in PRESETS:
        bits, quant, coders = _describe(name)
        lines.append(f"  {name:<9} {bits} bits/weight, {quant}, {coders}")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m nncodec.encode.presets --markdown
    import sys

    print(markdown_table() if "--markdown" in sys.argv else help_text(), end="" if "--markdown" in sys.argv else "\n")
