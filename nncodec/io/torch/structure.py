"""The structure of a torch checkpoint's pickled object, kept beside its tensors.

Everything else in the pickled object is kept in metadata key
``nncodec.torch.structure``, a JSON document (ASCII, compact)::

    {"v": 1, "root": NODE}

where NODE is one of

* JSON ``null``, ``true``, ``false``, a number or a string: a Python None,
  bool, int, float or str. A JSON number with a fraction or exponent is a
  float, one without is an int;
* ``{"t": "tensor", "name": NAME}``, plus ``"param": true`` for an
  ``nn.Parameter`` and ``"grad": true`` when ``requires_grad`` was set: the
  tensor called NAME in the checkpoint (a tensor or an alias);
* ``{"t": "dict", "items": [[KEY, VALUE], ...]}`` and ``{"t": "odict", ...}``
  (``collections.OrderedDict``); keys are NODEs too, in file order. An odict may
  carry ``"attrs": {NAME: NODE}``, its instance attributes (``state_dict()``
  keeps the module versions in ``_metadata``);
* ``{"t": "list"|"tuple"|"set"|"frozenset", "items": [NODE, ...]}``;
* ``{"t": "size", "items": [INT, ...]}``: a ``torch.Size`` (structure version 2);
* ``{"t": "float", "bits": "<16 hex digits>"}``: a NaN or infinity, by its
  IEEE-754 binary64 bit pattern (JSON cannot hold them);
* ``{"t": "bytes", "b64": "<base64>"}``;
* ``{"t": "dtype", "v": "<name>"}``: a ``torch.<name>`` dtype object;
* ``{"t": "ref", "id": N}``: the same object as the container node that carries
  ``"id": N`` earlier in the document (a container shared by reference, or a
  list or dict that contains itself).

Not kept: tensor locations (everything is written for ``cpu``), backward hooks
and the extra Python attributes of tensors and parameters.
"""

from __future__ import annotations

import base64
import collections
import json
import math
import struct

from ...errors import CorruptError, LimitError, UnsupportedError, UsageError, describe
from .. import _pickle as P
from ..checkpoint import Checkpoint

#: metadata key holding the structure of the pickled object (see the module docstring)
STRUCTURE_KEY = "nncodec.torch.structure"
STRUCTURE_VERSION = 1
#: the version written when the document holds a ``size`` node (torch.Size); readers take both
STRUCTURE_VERSION_SIZE = 2

#: containers nested deeper than this are refused (real checkpoints nest a few levels;
#: the bound keeps the structure JSON within what Python's json module can parse)
MAX_DEPTH = 100

_CONTAINERS = {
    dict: "dict",
    collections.OrderedDict: "odict",
    list: "list",
    tuple: "tuple",
    P.TorchSize: "size",
    set: "set",
    frozenset: "frozenset",
}


class Walk:
    """Turns the unpickled object into the structure JSON and the list of tensors.

    Iterative (explicit stack), so deep nesting cannot exhaust the Python stack;
    each container is expanded once (later occurrences become ``ref`` nodes),
    so shared references cannot blow up the output.
    """

    def __init__(self, path: str, text_budget: int):
        self.path = path
        self.budget = text_budget
        self.tensors: list = []  # (key path tuple, TensorRef, node)
        self.seen: dict = {}  # id(container) -> node
        self.open: set = set()  # ids of the containers being expanded (ancestors)
        self.next_id = 0

    def charge(self, n: int, where):
        self.budget -= n
        if self.budget < 0:
            raise LimitError(
                f"{self.path}: the pickled object expands to more text than its pickle size warrants "
                f"(shared strings or very long names, at {fmt_path(where)}); raise max_pickle_bytes if the file is trusted"
            )

    def run(self, root):
        holder = [None]
        # work items: (obj, key path, target list, target index, depth, why tensors are refused or None)
        stack: list = [(root, (), holder, 0, 0, None)]
        while stack:
            item = stack.pop()
            if item[0] is _EXIT:
                self.open.discard(item[1])
                continue
            obj, where, target, idx, depth, no_tensor = item
            target[idx] = self.visit(obj, where, depth, no_tensor, stack)
        return holder[0]

    def visit(self, obj, where, depth, no_tensor, stack):
        self.charge(1, where)
        t = type(obj)
        if obj is None or t is bool or t is int:
            return obj
        if t is str:
            self.charge(len(obj), where)
            return obj
        if t is float:
            if math.isfinite(obj):
                return obj
            return {"t": "float", "bits": struct.pack(">d", obj).hex()}
        if t is bytes:
            self.charge(len(obj) * 4 // 3 + 4, where)
            return {"t": "bytes", "b64": base64.b64encode(obj).decode("ascii")}
        if t is P.DType:
            return {"t": "dtype", "v": obj.torch_name}
        if t is P.TensorRef:
            if no_tensor:
                raise UnsupportedError(f"{self.path}: a tensor used as {no_tensor} at {fmt_path(where)}; nncodec cannot keep it")
            node = {"t": "tensor"}
            self.tensors.append((where, obj, node))
            return node
        kind = _CONTAINERS.get(t)
        if kind is None:
            what = "a bare storage object" if t is P.StorageRef else f"a value of type {short(obj)}"
            raise UnsupportedError(
                f"{self.path}: {what} at {fmt_path(where)}; nncodec keeps tensors, plain containers, "
                f"numbers, strings, bytes and None"
            )
        oid = id(obj)
        first = self.seen.get(oid)
        if first is not None:
            if oid in self.open and kind not in ("list", "dict", "odict"):
                raise UnsupportedError(f"{self.path}: a {t.__name__} that contains itself at {fmt_path(where)}")
            if "id" not in first:
                first["id"] = self.next_id
                self.next_id += 1
            return {"t": "ref", "id": first["id"]}
        if depth >= MAX_DEPTH:
            raise UnsupportedError(f"{self.path}: containers nested deeper than {MAX_DEPTH} levels at {fmt_path(where[:8])}...")
        node = {"t": kind}
        if not (kind == "tuple" and not obj):  # the empty tuple is a shared singleton; never a ref
            self.seen[oid] = node
        self.open.add(oid)
        stack.append((_EXIT, oid))
        work = []
        if kind in ("dict", "odict"):
            items = node["items"] = [[None, None] for _ in range(len(obj))]
            for pair, (k, v) in zip(items, obj.items()):
                work.append((k, where, pair, 0, depth + 1, "a dict key"))
                work.append((v, where + (k,), pair, 1, depth + 1, no_tensor))
            attrs = getattr(obj, "__dict__", None) if kind == "odict" else None
            if attrs:
                if not all(type(k) is str for k in attrs):
                    raise UnsupportedError(f"{self.path}: OrderedDict attributes with non-string names at {fmt_path(where)}")
                node["attrs"] = dict.fromkeys(attrs)
                for k, v in attrs.items():
                    work.append((v, where + ("<attr>", k), node["attrs"], k, depth + 1, "an OrderedDict attribute"))
        else:
            seq = list(obj)
            node["items"] = [None] * len(seq)
            in_set = kind in ("set", "frozenset")
            for i, v in enumerate(seq):
                work.append((v, where + (i,), node["items"], i, depth + 1, f"a {kind} element" if in_set else no_tensor))
        stack.extend(reversed(work))
        return node


_EXIT = object()


def fmt_path(where) -> str:
    """A key path for a message, cut to 80 characters (with its length when cut)."""
    return describe(".".join(component(k) for k in where), 80) if where else "the top level"


def component(k) -> str:
    """One key of a tensor's path as it appears in the tensor's name."""
    t = type(k)
    if t is str:
        return k
    if t is int and k.bit_length() < 200:
        return repr(k)
    if k is None or t is bool or t is float:
        return repr(k)
    if t is bytes or (t is tuple and len(k) <= 8 and all(
            type(x) in (str, bytes, bool, float) or (type(x) is int and x.bit_length() < 64) or x is None for x in k)):
        r = repr(k)
        return r if len(r) <= 200 else f"{r[:200]}...({len(r)} characters)"
    return f"<{describe(k)}>"


def short(v, n=80) -> str:
    """A bounded summary of a value a file supplied (never the repr of a container)."""
    if isinstance(v, (P.DType, P.StorageType)):
        return repr(v)
    return describe(v, n)


def tensor_names(root, paths) -> list:
    """Tensor names from key paths, dropping a single top-level wrapper key, made unique."""
    drop = 0
    if type(root) in (dict, collections.OrderedDict) and paths and all(len(p) >= 2 for p in paths):
        first = paths[0][0]
        if all(p[0] == first and type(p[0]) is type(first) for p in paths):
            if type(root.get(first)) in (dict, collections.OrderedDict):
                drop = 1
    names, used = [], set()
    for p in paths:
        name = ".".join(component(k) for k in p[drop:]) or "tensor"
        if name in used:
            n = 2
            while f"{name}#{n}" in used:
                n += 1
            name = f"{name}#{n}"
        used.add(name)
        names.append(name)
    return names


def structure_root(ck: Checkpoint):
    """The structure document's root for writing ``ck``; a flat state dict when none is recorded."""
    names = ck.names()
    text = ck.metadata.get(STRUCTURE_KEY)
    if text is None:  # a flat state dict in checkpoint order
        return {"t": "odict", "items": [[n, {"t": "tensor", "name": n}] for n in names]}
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise CorruptError(f"metadata {STRUCTURE_KEY}: not valid JSON ({str(e)[:200]})") from None
    if not isinstance(doc, dict) or doc.get("v") not in (STRUCTURE_VERSION, STRUCTURE_VERSION_SIZE) or "root" not in doc:
        raise UnsupportedError(f"metadata {STRUCTURE_KEY}: not a version-{STRUCTURE_VERSION} or "
                               f"-{STRUCTURE_VERSION_SIZE} structure document")
    # every tensor of the checkpoint must appear, and only those
    used = []
    stack = [doc["root"]]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            if n.get("t") == "tensor":
                if type(n.get("name")) is not str:
                    raise CorruptError(f"metadata {STRUCTURE_KEY}: a tensor node whose name is {short(n.get('name'))}")
                used.append(n["name"])
            for v in n.values():
                if isinstance(v, (dict, list)):
                    stack.append(v)
        elif isinstance(n, list):
            stack.extend(n)
    missing = [n for n in used if n not in ck.tensors and n not in ck.aliases]
    extra = set(names) - set(used)
    twice = sorted(n for n, c in collections.Counter(used).items() if c > 1)
    if missing or extra or twice:
        raise UsageError(
            f"metadata {STRUCTURE_KEY} does not match the checkpoint's tensors "
            f"(named there but missing: {_some(missing)}; present but not named: {_some(sorted(extra))}; "
            f"named twice: {_some(twice)}); remove that metadata key to write a flat state dict"
        )
    return doc["root"]


def _some(names) -> str:
    return "[" + ", ".join(short(n) for n in names[:5]) + (", ..." if len(names) > 5 else "") + "]"


def contiguous_stride(size, keep_ones=True) -> tuple:
    """C-order strides in elements, as torch computes them (size-0/1 dims counted as 1)."""
    out, acc = [], 1
    for d in reversed(size):
        out.append(acc if keep_ones or d > 1 else 0)
        acc *= max(d, 1)
    return tuple(reversed(out))
