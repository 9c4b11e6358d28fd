"""Hugging Face ``transformers``: load an encoded model folder, save a model as one.

::

    import nncodec.hf
    from transformers import AutoModelForCausalLM

    model = nncodec.hf.from_pretrained(AutoModelForCausalLM, "model-nnc", dtype="auto", device_map="cpu")
    nncodec.hf.save_pretrained(model, "small-nnc", bits=6, max_shard_size="2GB")

    nncodec.hf.enable()                                     # from here on, plain transformers reads them
    model = AutoModelForCausalLM.from_pretrained("model-nnc")
    with nncodec.hf.enable():                               # or only inside a block
        ...

An encoded folder is what ``nncodec encode MODEL_DIR OUT_DIR`` writes (spec/FOLDERS.md):
one ``.nnc`` file per shard, ``config.json``, the generation config and the tokenizer files
as they were, and ``nncodec.index.json``. Loading goes through ``transformers``' own
``from_pretrained``: the config, the generation config, ``dtype`` / ``torch_dtype``,
``device_map``, ``max_memory``, ``attn_implementation``, config overrides and the other
keywords act as they do on a plain folder. Only the step that finds the weight files is
changed: for an encoded folder it names the ``.nnc`` files of the weight set
``transformers`` would have picked, and each tensor is then decoded when ``transformers``
materializes it (on its loading threads), so the decoded copy is the model's own weight
(no second copy of the model in memory).

Hooked, and restored by :func:`disable` or at the end of a ``with`` block, are two
functions of ``transformers.modeling_utils``: ``_get_resolved_checkpoint_files`` (where
``from_pretrained`` resolves a folder to its weight files) and ``load_state_dict`` (how it
reads a weight file that is not safetensors). Every other folder goes to the original
functions unchanged. ``transformers`` is imported only when one of these functions is
called; ``import nncodec`` imports neither it nor torch.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import shutil
import tempfile
import threading

from .errors import CorruptError, UnsupportedError, UsageError

__all__ = ["from_pretrained", "save_pretrained", "enable", "disable", "enabled", "is_enabled",
           "is_encoded_folder"]

#: the functions of transformers.modeling_utils that enable() hooks
_HOOKS = ("_get_resolved_checkpoint_files", "load_state_dict")
#: further modules that import _get_resolved_checkpoint_files by name
_ALSO = ("transformers.modeling_layers",)


def _transformers():
    try:
        import transformers
        from transformers import modeling_utils
    except ImportError as e:
        raise UnsupportedError(f"nncodec.hf needs transformers (and torch), which is not importable here ({e}); "
                               f"install it with pip install transformers, or decode the folder with "
                               f"nncodec decode and load it without nncodec") from None
    missing = [h for h in _HOOKS if not callable(getattr(modeling_utils, h, None))]
    if missing:
        raise UnsupportedError(f"transformers {transformers.__version__} has no modeling_utils.{missing[0]}, "
                               f"which nncodec.hf hooks to find the weights of a folder; use another "
                               f"transformers version, or decode the folder with nncodec decode and load it "
                               f"as usual")
    return transformers, modeling_utils


def _version(transformers) -> tuple:
    m = re.match(r"(\d+)\.(\d+)", transformers.__version__)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def is_encoded_folder(path) -> bool:
    """True if ``path`` is a folder written by ``nncodec encode MODEL_DIR OUT_DIR``."""
    from .folders import is_encoded_folder as _is

    return _is(path)


# ------------------------------------------------------------------ the encoded folder's weights


def _check_folder(path: str, what: str = "from_pretrained") -> dict:
    """The checked nncodec.index.json of ``path``, or an error that says what ``path`` is instead."""
    from .folders import INDEX_NAME, is_model_folder, read_folder_index

    if not os.path.isdir(path):
        if os.path.isfile(path):
            raise UsageError(f"{path}: is a file; {what} takes the folder written by nncodec encode MODEL_DIR "
                             f"OUT_DIR (for one .nnc file use nncodec.torch.load_file)")
        raise UsageError(f"{path}: no such folder; {what} takes a local folder written by nncodec encode "
                         f"MODEL_DIR OUT_DIR (download a Hub repository first, e.g. with "
                         f"huggingface_hub.snapshot_download)")
    if not os.path.isfile(os.path.join(path, INDEX_NAME)):
        if is_model_folder(path):
            raise UsageError(f"{path}: not an nncodec folder (no {INDEX_NAME}) but a plain model folder: "
                             f"load it with transformers' own from_pretrained, or encode it first with "
                             f"nncodec encode {path} OUT_DIR")
        raise UsageError(f"{path}: not an nncodec folder (no {INDEX_NAME}); write one with nncodec encode "
                         f"MODEL_DIR OUT_DIR or nncodec.hf.save_pretrained")
    doc = read_folder_index(path)
    if doc["kind"] != "model":
        raise UsageError(f"{path}: is a folder of updates (nncodec diff), not a model; apply it with "
                         f"nncodec patch BASE {path} OUT first")
    return doc


def _weight_names(modeling_utils, variant, use_safetensors, explicit) -> list:
    """The weight files transformers looks for in a local folder, in its order."""
    add = getattr(modeling_utils, "_add_variant", lambda name, v=None: name)
    st = getattr(modeling_utils, "SAFE_WEIGHTS_NAME", "model.safetensors")
    st_index = getattr(modeling_utils, "SAFE_WEIGHTS_INDEX_NAME", "model.safetensors.index.json")
    pt = getattr(modeling_utils, "WEIGHTS_NAME", "pytorch_model.bin")
    pt_index = getattr(modeling_utils, "WEIGHTS_INDEX_NAME", "pytorch_model.bin.index.json")
    names = [explicit] if explicit else []
    if use_safetensors is not False:
        names += [add(st, variant), add(st_index, variant)]
    if not use_safetensors:
        names += [add(pt, variant), add(pt_index, variant)]
    return names


def _pick_group(doc: dict, names: list) -> dict:
    """The weight set transformers would load: the first of ``names`` that is a set's index or
    single file, else the folder's primary set (spec/FOLDERS.md §1)."""
    for name in names:
        for g in doc["groups"]:
            if g["index"] == name or (g["index"] is None and g["shards"][0]["file"] == name):
                return g
    return doc["groups"][0]


def _resolve(folder: str, doc: dict, group: dict) -> tuple:
    """(checkpoint files, sharded metadata) for ``group`` as transformers' resolver returns them."""
    from .folders import _join

    files = [_join(folder, s["nnc"]) for s in group["shards"]]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise CorruptError(f"{missing[0]}: listed in {folder}'s nncodec.index.json but missing; "
                           f"copy the whole encoded folder")
    if group["index"] is None:
        return files, None
    md = dict(group["metadata"]) if isinstance(group["metadata"], dict) else {}
    md["all_checkpoint_keys"] = list(group["weight_map"])
    md["weight_map"] = {n: v.rsplit("/", 1)[-1] for n, v in group["weight_map"].items()}
    return files, md


# ------------------------------------------------------------------ the hooks

_lock = threading.RLock()
_on = False
_served = threading.local()  # .count: encoded folders the resolver hook served on this thread
_saved: dict = {}  # (module, attribute) -> the original function


def _hook_resolve(original):
    sig = inspect.signature(original)

    def _get_resolved_checkpoint_files(*args, **kwargs):
        if _on:
            try:
                bound = sig.bind(*args, **kwargs)
            except TypeError:
                bound = None
            if bound is not None:
                a = bound.arguments
                path = a.get("pretrained_model_name_or_path")
                dl = a.get("download_kwargs") or {}
                folder = None if path is None else os.path.join(os.fspath(path), dl.get("subfolder") or "")
                if (folder is not None and a.get("gguf_file") is None and is_encoded_folder(folder)):
                    _, mu = _transformers()
                    doc = _check_folder(folder)
                    names = _weight_names(mu, a.get("variant"), a.get("use_safetensors"),
                                          a.get("transformers_explicit_filename"))
                    out = _resolve(folder, doc, _pick_group(doc, names))
                    _served.count = getattr(_served, "count", 0) + 1
                    return out
        return original(*args, **kwargs)

    _get_resolved_checkpoint_files.__wrapped__ = original
    _get_resolved_checkpoint_files.__nncodec_hook__ = True
    return _get_resolved_checkpoint_files


def _hook_load(original):
    sig = inspect.signature(original)

    def load_state_dict(*args, **kwargs):
        try:
            a = sig.bind(*args, **kwargs).arguments
        except TypeError:
            a = {}
        path = a.get("checkpoint_file")
        if path is not None and os.fspath(path).endswith(".nnc"):
            return _load_nnc(os.fspath(path), a.get("map_location", None))
        return original(*args, **kwargs)

    load_state_dict.__wrapped__ = original
    load_state_dict.__nncodec_hook__ = True
    return load_state_dict


def _load_nnc(path: str, map_location) -> dict:
    """One .nnc shard as transformers' ``load_state_dict`` gives a weight file.

    Called without ``map_location`` (as ``from_pretrained`` reads each shard), the values are
    lazy slices (``[...]`` decodes the tensor), like the ones safetensors gives it; with
    ``map_location="meta"`` empty tensors of the right shape and dtype; with another
    ``map_location`` the decoded tensors there.
    """
    from . import torch as nt
    from .safeopen import SafeOpen

    f = SafeOpen(path, "pt", "cpu")
    if map_location is None:
        return {k: f.get_slice(k) for k in f.keys()}
    import torch

    if str(map_location) == "meta":
        out = {}
        for k in f.keys():
            spec = f._reader.spec(k)
            out[k] = torch.empty(tuple(spec.shape), dtype=nt.torch_dtype(spec.dtype, f"tensor {k!r}: "),
                                 device="meta")
        f.close()
        return out
    with f:
        tensors = f.get_tensors()
    if str(map_location) != "cpu":
        moved: dict = {}
        for k, v in tensors.items():
            if id(v) not in moved:
                moved[id(v)] = v.to(map_location)
            tensors[k] = moved[id(v)]
    return tensors


def _install() -> None:
    import importlib

    _, mu = _transformers()
    makers = {"_get_resolved_checkpoint_files": _hook_resolve, "load_state_dict": _hook_load}
    for name in _HOOKS:
        original = getattr(mu, name)
        if getattr(original, "__nncodec_hook__", False):
            continue
        hook = makers[name](original)
        _saved[(mu, name)] = original
        setattr(mu, name, hook)
        if name == "_get_resolved_checkpoint_files":
            for modname in _ALSO:
                try:
                    mod = importlib.import_module(modname)
                except Exception:  # pragma: no cover - a module this transformers lacks
                    continue
                if getattr(mod, name, None) is original:
                    _saved[(mod, name)] = original
                    setattr(mod, name, hook)


def _uninstall() -> None:
    for (mod, name), original in list(_saved.items()):
        current = getattr(mod, name, None)
        if getattr(current, "__nncodec_hook__", False) and current.__wrapped__ is original:
            setattr(mod, name, original)
        # a hook someone else wrapped stays, and passes every call through while disabled
        del _saved[(mod, name)]


def _set(on: bool) -> None:
    global _on
    with _lock:
        if on and not _saved:
            _install()
        _on = on
        if not on:
            _uninstall()


class _Enabled:
    """What :func:`enable` returns: used in a ``with`` block, it restores the state before."""

    def __init__(self, before: bool):
        self._before = before

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _set(self._before)
        return False

    def __repr__(self):
        return f"<nncodec.hf enabled (was {'on' if self._before else 'off'} before)>"


def enable() -> _Enabled:
    """Let ``transformers``' ``from_pretrained`` (``AutoModel*`` and every model class) load
    folders written by ``nncodec encode MODEL_DIR OUT_DIR``; other folders load as before.

    Calling it again changes nothing. ``with nncodec.hf.enable(): ...`` enables it for the
    block only: on leaving, the state before the call comes back (the original functions of
    ``transformers`` when it was off). :func:`disable` turns it off.
    """
    with _lock:
        before = _on and bool(_saved)
        _set(True)
        return _Enabled(before)


def disable() -> None:
    """Restore ``transformers``' own functions (a no-op when not enabled)."""
    _set(False)


@contextlib.contextmanager
def enabled():
    """A ``with`` block in which ``transformers`` loads encoded folders (see :func:`enable`)."""
    with enable():
        yield


def is_enabled() -> bool:
    """True while ``transformers`` loads encoded folders."""
    return _on


# ------------------------------------------------------------------ loading


def _dtype_keywords(transformers, kwargs: dict) -> dict:
    """``torch_dtype`` and ``dtype`` accepted alike, passed under the name this transformers uses."""
    kwargs = dict(kwargs)
    if "torch_dtype" in kwargs:
        td = kwargs.pop("torch_dtype")
        if "dtype" in kwargs and kwargs["dtype"] is not None and td is not None and kwargs["dtype"] != td:
            raise UsageError(f"dtype={kwargs['dtype']!r} and torch_dtype={td!r} disagree; give one of them "
                             f"(torch_dtype is the older name of dtype)")
        if kwargs.get("dtype") is None:
            kwargs["dtype"] = td
    if "dtype" in kwargs and _version(transformers) < (4, 56):
        kwargs["torch_dtype"] = kwargs.pop("dtype")
    return kwargs


def from_pretrained(model_class, path, *model_args, **kwargs):
    """Load the folder ``path`` written by ``nncodec encode MODEL_DIR OUT_DIR`` (lossless or
    lossy) as ``model_class.from_pretrained(path, ...)`` would load the original folder.

    ``model_class`` is a ``transformers`` model class (``AutoModelForCausalLM``,
    ``LlamaForCausalLM``, ...) or its name. Every keyword goes to ``from_pretrained``:
    ``dtype`` (or ``torch_dtype``, its older name), ``device_map``, ``max_memory``,
    ``attn_implementation``, ``subfolder``, config overrides, ... A folder that is not an
    encoded folder is refused with a message saying what it is.
    """
    transformers, _ = _transformers()
    if isinstance(model_class, str):
        cls = getattr(transformers, model_class, None)
        if cls is None or not hasattr(cls, "from_pretrained"):
            raise UsageError(f"transformers has no model class {model_class!r}; pass a class such as "
                             f"transformers.AutoModel")
        model_class = cls
    if not hasattr(model_class, "from_pretrained"):
        raise UsageError(f"model_class must be a transformers model class (with from_pretrained), "
                         f"got {model_class!r:.80}")
    if not isinstance(path, (str, os.PathLike)):
        raise UsageError(f"path must be a folder path, got {type(path).__name__}")
    path = os.fspath(path)
    sub = kwargs.get("subfolder") or ""
    _check_folder(os.path.join(path, sub) if sub else path)
    kwargs = _dtype_keywords(transformers, kwargs)
    before = getattr(_served, "count", 0)
    with enable():
        try:
            return model_class.from_pretrained(path, *model_args, **kwargs)
        except OSError as e:
            if getattr(_served, "count", 0) != before:
                raise
            raise UnsupportedError(f"{path}: transformers {transformers.__version__} did not look for the weight "
                                   f"files through modeling_utils._get_resolved_checkpoint_files as nncodec.hf "
                                   f"expects ({str(e)[:300]}); decode the folder with nncodec decode and load "
                                   f"the result as usual") from e


# ------------------------------------------------------------------ saving


def save_pretrained(model, out_dir, *, tokenizer=None, options=None, threads: int | None = None,
                    progress=None, metadata: dict | None = None, **kwargs) -> dict:
    """Write ``model`` (a ``transformers`` model) as an encoded folder ``out_dir``: what
    ``model.save_pretrained`` writes, encoded as ``nncodec encode`` does.

    Coding options (``bits=6``, ``preset="small"``, ``keep=[...]``, ... as
    :func:`nncodec.encode_file`; lossless when none is given, or ``options=`` an
    :class:`nncodec.encode.EncodeOptions`) are taken out of ``kwargs``; the rest
    (``max_shard_size``, ``variant``, ``state_dict``, ...) go to ``model.save_pretrained``.
    ``tokenizer`` (anything with ``save_pretrained``: a tokenizer, a processor) is saved
    beside the model. The model is saved to a temporary folder beside ``out_dir`` first and
    encoded shard by shard; ``out_dir`` must not exist or be empty, and appears only when
    complete. Returns the folder's ``nncodec.index.json``.
    """
    from .encode.options import EncodeOptions
    from .folders import encode_folder

    if not hasattr(model, "save_pretrained"):
        raise UsageError(f"model must have save_pretrained (a transformers model), got {type(model).__name__}")
    if kwargs.get("push_to_hub"):
        raise UsageError("push_to_hub is not supported here: save the encoded folder, then upload it with "
                         "huggingface_hub.upload_folder")
    coding = {k: kwargs.pop(k) for k in list(kwargs) if k in EncodeOptions.KEYWORDS}
    if options is not None and coding:
        raise UsageError(f"give options either as EncodeOptions or as keywords, not both ({sorted(coding)})")
    if options is None:
        options = EncodeOptions.from_keywords(**coding)
    try:
        params = inspect.signature(model.save_pretrained).parameters
    except (TypeError, ValueError):  # pragma: no cover - a save_pretrained without a signature
        params = {}
    named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(k for k in kwargs if named and k not in named)
    if unknown:
        raise UsageError(f"unknown keyword(s) {', '.join(unknown)}: neither a coding option "
                         f"({', '.join(EncodeOptions.KEYWORDS)}) nor a parameter of save_pretrained "
                         f"({', '.join(n for n in named if n != 'save_directory')})")
    out = os.fspath(out_dir)
    if os.path.lexists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise UsageError(f"{out}: output exists and is not an empty folder; choose another path or remove it")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise UsageError(f"{out}: the folder {parent} does not exist; create it first")
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(os.path.abspath(out)) + ".", suffix=".src", dir=parent)
    try:
        model.save_pretrained(tmp, **kwargs)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        return encode_folder(tmp, out, options=options, threads=threads, progress=progress, metadata=metadata)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
