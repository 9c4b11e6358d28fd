"""The checks every codec passes, shared by the codec test files (like numcodecs' tests/common.py).

``check_codec(codec, arr)`` runs, for one configured codec and one input:

1. round trip: encode, then decode with the same codec *and* with the codec
   rebuilt from its stored configuration, to the same array (``exact=True``)
   or one of the same spec (lossy stages; their own tests bound the error);
2. config round trip: ``to_json`` survives JSON and ``get_codec`` rebuilds an
   equal codec;
3. bad configurations (``bad_configs``) are refused with :class:`CorruptError`;
4. a golden file ``tests/golden/<id>_v1.nnc`` (or one naming the id among its
   stages, e.g. ``tcq_cabac_v1.nnc``) exists for the codec id.

A golden file is never written here: tools/make_golden.py writes them, on purpose.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nncodec.codecs import ARRAY_TO_ARRAY, ARRAY_TO_BYTES, ArraySpec, Context, get_codec
from nncodec.errors import CorruptError

GOLDEN = Path(__file__).parent / "golden"
CTX = Context(name="conformance.weight")


def golden_file(codec_id: str) -> Path | None:
    """The golden file that pins the bytes of ``codec_id``, or None."""
    exact = GOLDEN / f"{codec_id}_v1.nnc"
    if exact.exists():
        return exact
    for p in sorted(GOLDEN.glob("*_v1.nnc")):
        if codec_id in p.name[: -len("_v1.nnc")].split("_"):
            return p
    return None


def _encode(codec, arr):
    if codec.kind == ARRAY_TO_ARRAY:
        return codec.fit_encode(arr, CTX)
    return codec, codec.encode(arr, CTX)


def _decode(codec, enc, spec):
    if codec.kind == ARRAY_TO_ARRAY or codec.kind == ARRAY_TO_BYTES:
        return codec.decode(enc, spec, CTX)
    return codec.decode(memoryview(enc), CTX, 1 << 30)


def check_codec(codec, arr, *, exact: bool = True, bad_configs=()) -> None:
    """Run the shared checks on ``codec`` with input ``arr`` (an array, or bytes for bytes->bytes)."""
    fitted, enc = _encode(codec, arr)
    stored = get_codec(json.loads(json.dumps(fitted.to_json())))
    assert stored == fitted and stored.to_json() == fitted.to_json()
    if isinstance(arr, (bytes, bytearray)):
        assert bytes(_decode(fitted, enc, None)) == bytes(arr)
        assert bytes(_decode(stored, enc, None)) == bytes(arr)
    else:
        spec = ArraySpec.of(np.asarray(arr))
        if codec.kind == ARRAY_TO_ARRAY:
            assert ArraySpec.of(enc) == fitted.resolve(spec)
        a, b = _decode(fitted, enc, spec), _decode(stored, enc, spec)
        assert ArraySpec.of(a) == spec and ArraySpec.of(b) == spec
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
        if exact:
            assert np.asarray(a).tobytes() == np.asarray(arr).tobytes()
    for bad in bad_configs:
        with pytest.raises(CorruptError):
            type(codec).from_config(bad)
    assert golden_file(codec.codec_id) is not None, f"no golden file in tests/golden for {codec.codec_id!r}"
