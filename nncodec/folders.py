"""Hugging Face model folders: sharded checkpoints, their index and every other file.

A model folder (what ``save_pretrained`` writes and the Hub serves) holds weight
files, either one (``model.safetensors``, ``pytorch_model.bin``) or shards named
by an index (``model.safetensors.index.json``, ``pytorch_model.bin.index.json``),
next to files that are not weights (``config.json``, tokenizer files,
subfolders). :func:`encode_folder` writes one ``.nnc`` file per weight file
(``<shard>.nnc``), copies every other file byte for byte and writes
``nncodec.index.json``; :func:`decode_folder` rebuilds the original folder from
it. spec/FOLDERS.md defines the layout and the index.

Shards are coded one at a time, so memory is bounded by the largest shard. Output
folders are built in a temporary folder beside the target and renamed into
place at the end: an error or Ctrl-C leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile

from . import io as nio
from .errors import CorruptError, NNCodecError, UnsupportedError, UsageError
from .format.constants import DEFAULT_LIMITS, Limits

__all__ = [
    "INDEX_NAME", "FOLDER_VERSION", "is_model_folder", "is_encoded_folder", "read_folder_index",
    "encode_folder", "decode_folder", "folder_info", "compare_folders", "compare_files", "diff_folders", "patch_folders",
]

#: the file an encoded folder is recognised by
INDEX_NAME = "nncodec.index.json"
#: the version of the nncodec.index.json layout this module writes and reads
FOLDER_VERSION = 1
#: what is appended to a weight file's name to name its .nnc file
NNC_SUFFIX = ".nnc"
#: folders that are not part of a model and are never carried (a git checkout's own data)
SKIP_DIRS = frozenset({".git"})
#: the weight files of a folder without an index, besides top-level ``*.safetensors``
SINGLE_BIN = ("pytorch_model.bin",)
#: the largest nncodec.index.json or weight index read (a weight map of a million tensors fits)
MAX_INDEX_BYTES = 256 << 20
_COPY_BLOCK = 1 << 20
_SHARD_FORMATS = ("safetensors", "torch", "torch-legacy", "npz")
_KINDS = ("model", "update")


# ------------------------------------------------------------------ paths


def _check_rel(name, what: str) -> str:
    """A relative path inside a folder ('/'-separated), refused if it could leave the folder."""
    if not isinstance(name, str) or not name:
        raise CorruptError(f"{what}: a file name must be a non-empty string")
    parts = name.split("/")
    if (name.startswith("/") or "\\" in name or "\x00" in name or ":" in parts[0]
            or any(p in ("", ".", "..") for p in parts)):
        raise CorruptError(f"{what}: file name {name[:200]!r} is not a plain relative path inside the folder")
    return name


def _join(root: str, rel: str) -> str:
    return os.path.join(root, *rel.split("/"))


def _walk(root: str) -> list:
    """Every file under ``root`` as a sorted list of '/'-separated relative paths.

    Symbolic links to files are followed (a Hub cache snapshot is made of them);
    folder links are followed once each; ``.git`` folders are skipped.
    """
    out = []
    seen = set()
    for d, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(d)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS)
        rel = os.path.relpath(d, root)
        for f in files:
            p = f if rel == "." else os.path.join(rel, f).replace(os.sep, "/")
            full = os.path.join(d, f)
            if not os.path.isfile(full):
                raise UsageError(f"{full}: not a regular file (a broken link?); remove it or fix the link")
            out.append(p)
    return sorted(out)


def _folder_prefix(path: str) -> str:
    return os.path.join(os.path.realpath(path), "")


@contextlib.contextmanager
def atomic_dir(dst, *, inputs=()):
    """Yield a temporary folder beside ``dst``; rename it to ``dst`` on success.

    Refuses an existing ``dst`` that is a file or a non-empty folder, and a
    ``dst`` inside one of ``inputs`` (or holding one). On any exception (Ctrl-C
    included) the temporary folder is removed and ``dst`` left as it was.
    """
    dst = os.fspath(dst)
    if os.path.lexists(dst):
        if not os.path.isdir(dst):
            raise UsageError(f"{dst}: output exists and is not a folder; choose another output path")
        if os.listdir(dst):
            raise UsageError(f"{dst}: output folder exists and is not empty; choose another path or remove it")
    parent = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(parent):
        raise UsageError(f"{dst}: the folder {parent} does not exist; create it first")
    out = _folder_prefix(dst)
    for src in inputs:
        inp = _folder_prefix(src)
        if out.startswith(inp) or inp.startswith(out):
            raise UsageError(f"{dst}: output folder is inside the input folder {src} (or holds it); "
                             f"choose an output path outside it")
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(os.path.abspath(dst)) + ".", suffix=".part", dir=parent)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        if os.path.isdir(dst):
            os.rmdir(dst)  # empty, checked above
        os.rename(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _copy(src_root: str, dst_root: str, rel: str, expected: dict | None = None) -> dict:
    """Copy one file byte for byte; return its ``files`` entry (spec/FOLDERS.md §3).

    With ``expected`` (the entry recorded at encode time) a copy whose size or
    SHA-256 differs is refused: the encoded folder was damaged after it was written.
    """
    target = _join(dst_root, rel)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    h, n = hashlib.sha256(), 0
    with open(_join(src_root, rel), "rb") as fi, open(target, "wb") as fo:
        while True:
            block = fi.read(_COPY_BLOCK)
            if not block:
                break
            h.update(block)
            fo.write(block)
            n += len(block)
    entry = {"file": rel, "bytes": n, "sha256": h.hexdigest()}
    if expected is not None and (expected["bytes"], expected["sha256"]) != (n, entry["sha256"]):
        raise CorruptError(f"{_join(src_root, rel)}: differs from the file that was encoded ({n} bytes, SHA-256 "
                           f"{entry['sha256']}; recorded {expected['bytes']} bytes, {expected['sha256']}); "
                           f"the folder was changed or damaged since: copy it again from its source")
    return entry


def _carry(src_root: str, dst_root: str, files: list, prog, expected: dict | None = None) -> list:
    """Copy every file of ``files``; return their entries. ``expected``: entries by path, to check against."""
    out = []
    for f in files:
        out.append(_copy(src_root, dst_root, f, None if expected is None else expected.get(f)))
        prog.copied(f, out[-1]["bytes"])
    return out


@contextlib.contextmanager
def _about(shard: str, folder: str):
    """Name the shard in an error raised while it is processed, unless the message already does."""
    try:
        yield
    except NNCodecError as e:
        msg = str(e)
        if shard in msg:
            raise
        try:
            err = type(e)(f"{os.path.join(folder, shard)}: {msg}")
        except Exception:  # pragma: no cover - an error class with another signature
            raise e from None
        raise err from e


# ------------------------------------------------------------------ JSON


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate key {k[:100]!r}")
        d[k] = v
    return d


def _read_json(path: str, what: str):
    size = os.path.getsize(path)
    if size > MAX_INDEX_BYTES:
        raise CorruptError(f"{path}: {what} of {size} bytes is over the {MAX_INDEX_BYTES}-byte limit; not an index")
    with open(path, "rb") as f:
        raw = f.read(MAX_INDEX_BYTES + 1)
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise CorruptError(f"{path}: {what} is not valid JSON ({str(e)[:200]}); restore it from the original") from None


# ------------------------------------------------------------------ reading a model folder


def _weight_index(root: str, name: str, files: set):
    """The weight map of the index file ``name``, or None when the file is not a weight index."""
    path = _join(root, name)
    try:
        doc = _read_json(path, "weight index")
    except CorruptError:
        return None  # a .index.json that is not JSON is not a weight index: carried as a file
    if not isinstance(doc, dict) or not doc.get("weight_map"):
        return None  # no weight map, or an empty one: not an index of weights
    wm = doc["weight_map"]
    if not isinstance(wm, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in wm.items()):
        raise UsageError(f"{path}: 'weight_map' must map tensor names to shard file names; fix or remove the index")
    md = doc.get("metadata")
    shards = []
    for v in wm.values():
        try:
            _check_rel(v, path)
        except CorruptError as e:
            raise UsageError(str(e)) from None
        if v not in shards:
            shards.append(v)
    for s in shards:
        if s not in files:
            raise UsageError(f"{path}: names shard {s!r}, which is not in the folder; "
                             f"the download is incomplete: fetch the missing shard")
    return {"index": name, "metadata": md, "shards": sorted(shards), "weight_map": dict(wm)}


def _scan(root: str) -> tuple:
    """(groups, other files) of a model folder; each group: index, metadata, shards, weight_map."""
    if not os.path.isdir(root):
        raise UsageError(f"{root}: no such folder")
    files = _walk(root)
    fileset = set(files)
    if INDEX_NAME in fileset:
        raise UsageError(f"{root}: is already an nncodec folder ({INDEX_NAME}); decode it first or copy it")
    groups = []
    claimed = {}
    for name in files:
        if "/" in name or not name.endswith(".index.json"):
            continue
        g = _weight_index(root, name, fileset)
        if g is None:
            continue
        for s in g["shards"]:
            if s in claimed:
                raise UsageError(f"{root}: shard {s!r} is named by two indexes, {claimed[s]} and {name}; "
                                 f"remove one of them")
            claimed[s] = name
        groups.append(g)
    for name in files:
        if "/" in name or name in claimed:
            continue
        if name.endswith(".safetensors") or name in SINGLE_BIN:
            groups.append({"index": None, "metadata": None, "shards": [name], "weight_map": None})
            claimed[name] = name
    if not groups:
        raise UsageError(f"{root}: no weights found; a model folder holds model.safetensors, pytorch_model.bin "
                         f"or shards named by an index such as model.safetensors.index.json")
    for s in claimed:
        if s + NNC_SUFFIX in fileset:
            raise UsageError(f"{root}: holds both {s} and {s + NNC_SUFFIX}; remove or rename {s + NNC_SUFFIX}")
    groups.sort(key=lambda g: (not g["shards"][0].endswith(".safetensors"), g["index"] is None, _key(g)))
    others = [f for f in files if f not in claimed]
    return groups, others


def _key(group: dict) -> str:
    """How a weight set is matched across folders: its index file, else its one file."""
    return group["index"] or group["shards"][0]


def is_encoded_folder(path) -> bool:
    """True if ``path`` is a folder written by :func:`encode_folder` or :func:`diff_folders`."""
    path = os.fspath(path)
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, INDEX_NAME))


def is_model_folder(path) -> bool:
    """True if ``path`` is a folder of weights nncodec can encode (spec/FOLDERS.md §1)."""
    path = os.fspath(path)
    if not os.path.isdir(path) or is_encoded_folder(path):
        return False
    try:
        _scan(path)
    except NNCodecError:
        return False
    return True


# ------------------------------------------------------------------ nncodec.index.json


def read_folder_index(path) -> dict:
    """The checked ``nncodec.index.json`` of the encoded folder ``path`` (spec/FOLDERS.md §3)."""
    path = os.fspath(path)
    where = os.path.join(path, INDEX_NAME)
    if not os.path.isdir(path):
        raise UsageError(f"{path}: no such folder")
    if not os.path.isfile(where):
        raise UsageError(f"{path}: not an nncodec folder (no {INDEX_NAME}); encode it with nncodec encode first")
    doc = _read_json(where, "folder index")

    def bad(msg):
        return CorruptError(f"{where}: {msg}; re-encode the folder")

    if not isinstance(doc, dict):
        raise bad("not a JSON object")
    v = doc.get("nncodec_folder")
    if type(v) is not int:
        raise bad("field 'nncodec_folder' (the layout version) is missing")
    if v > FOLDER_VERSION:
        raise UnsupportedError(f"{where}: folder layout version {v}; this nncodec reads version {FOLDER_VERSION}, "
                               f"a newer nncodec wrote it (upgrade nncodec)")
    if v != FOLDER_VERSION:
        raise bad(f"field 'nncodec_folder' is {v}; layout versions start at 1")
    if doc.get("kind") not in _KINDS:
        raise bad(f"field 'kind' must be one of {list(_KINDS)}")
    groups = doc.get("groups")
    if not isinstance(groups, list) or not groups:
        raise bad("field 'groups' must be a non-empty list")
    names = {INDEX_NAME}
    for gi, g in enumerate(groups):
        at = f"groups[{gi}]"
        if not isinstance(g, dict):
            raise bad(f"{at} is not an object")
        if g.get("index") is not None:
            _check_rel(g["index"], where)
        if g.get("format") not in _SHARD_FORMATS:
            raise bad(f"{at}.format must be one of {list(_SHARD_FORMATS)}")
        shards = g.get("shards")
        if not isinstance(shards, list) or not shards:
            raise bad(f"{at}.shards must be a non-empty list")
        nncs = set()
        for si, s in enumerate(shards):
            if not isinstance(s, dict) or type(s.get("bytes")) is not int or s["bytes"] < 0:
                raise bad(f"{at}.shards[{si}] must be an object with 'file', 'nnc' and 'bytes' (a size >= 0)")
            f, n = _check_rel(s.get("file"), where), _check_rel(s.get("nnc"), where)
            if not n.endswith(NNC_SUFFIX):
                raise bad(f"{at}.shards[{si}].nnc {n[:200]!r} does not end in {NNC_SUFFIX}")
            for x in (f, n):
                if x in names:
                    raise bad(f"file name {x[:200]!r} occurs twice")
                names.add(x)
            nncs.add(n)
        wm = g.get("weight_map")
        if not isinstance(wm, dict) or not all(isinstance(v, str) and v in nncs for v in wm.values()):
            raise bad(f"{at}.weight_map must map each tensor name to one of the group's .nnc files")
        removed = g.get("removed", [])
        if not isinstance(removed, list) or not all(isinstance(x, str) for x in removed):
            raise bad(f"{at}.removed must be a list of tensor names")
    files = doc.get("files")
    if not isinstance(files, list):
        raise bad("field 'files' must be a list")
    for fi, e in enumerate(files):
        if (not isinstance(e, dict) or type(e.get("bytes")) is not int or e["bytes"] < 0
                or not isinstance(e.get("sha256"), str) or len(e["sha256"]) != 64
                or e["sha256"].strip("0123456789abcdef")):
            raise bad(f"files[{fi}] must be an object with 'file', 'bytes' (a size >= 0) and 'sha256' "
                      f"(64 lowercase hexadecimal digits)")
        f = _check_rel(e.get("file"), where)
        if f in names:
            raise bad(f"file name {f[:200]!r} occurs twice")
        names.add(f)
    folders_of = {n[:i] for n in names for i, c in enumerate(n) if c == "/"}
    clash = sorted(names & folders_of)
    if clash:
        raise bad(f"{clash[0][:200]!r} is both a file and a folder of other files")
    return doc


def _write_index(root: str, doc: dict) -> None:
    with open(os.path.join(root, INDEX_NAME), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _entries(doc: dict) -> dict:
    return {e["file"]: e for e in doc["files"]}


def _other_files(root: str, doc: dict) -> list:
    """The files an encoded folder carries as they are: those its index lists, checked to exist.

    Files the index does not list are not part of the model and are never copied
    (a link placed in a downloaded folder cannot pull a local file into the output).
    """
    listed = [e["file"] for e in doc["files"]]
    coded = [s["nnc"] for g in doc["groups"] for s in g["shards"]]
    missing = [n for n in coded + listed if not os.path.isfile(_join(root, n))]
    if missing:
        raise CorruptError(f"{root}: {missing[0]!r} is listed in {INDEX_NAME} but missing; "
                           f"copy the whole encoded folder")
    return listed


class _Progress:
    """Maps each shard's own progress onto bytes over the whole folder."""

    def __init__(self, progress, total: int):
        self.progress, self.total, self.base = progress, total, 0

    def shard(self, label: str, size: int):
        if self.progress is None:
            return None
        base, total, cb = self.base, self.total, self.progress
        self.base += size

        def report(_name, done, of):
            part = size if not of else min(done, of) * size // of
            cb(label, base + part, total)

        cb(label, base, total)
        return report

    def copied(self, label: str, size: int):
        """``size`` more bytes done, all at once (a copied file, a shard written in one go)."""
        self.base += size
        if self.progress is not None:
            self.progress(label, self.base, self.total)


# ------------------------------------------------------------------ encode / decode


def encode_folder(src_dir, dst_dir, *, threads: int | None = None, progress=None, limits: Limits = DEFAULT_LIMITS,
                  options=None, metadata: dict | None = None, **keywords) -> dict:
    """Encode the model folder ``src_dir`` to the folder ``dst_dir`` (spec/FOLDERS.md).

    Each weight file is encoded with :func:`nncodec.files.encode_file` (same
    ``options`` / keywords, ``metadata``, ``limits`` and ``threads``) to
    ``<file>.nnc``; every other file is copied byte for byte; the layout goes
    to ``nncodec.index.json``. Lossy options apply shard by shard (a ``bits``
    target holds for each shard, hence for the whole). ``progress``, if given,
    is called as ``progress(shard_file, bytes_done, bytes_total)`` over the
    whole folder. ``dst_dir`` must not exist or be empty; it appears only when
    complete. Returns the index written.
    """
    from .encode import EncodeOptions
    from .files import encode_file

    if options is not None and keywords:
        raise UsageError(f"give options either as EncodeOptions or as keywords, not both ({sorted(keywords)})")
    opts = options if options is not None else EncodeOptions.from_keywords(**keywords)
    src, dst = os.fspath(src_dir), os.fspath(dst_dir)
    groups, others = _scan(src)
    if dst.rstrip("/\\").lower().endswith(NNC_SUFFIX):
        raise UsageError(f"{dst}: a model folder encodes to a folder (one .nnc file per shard); "
                         f"give a folder name without {NNC_SUFFIX}, e.g. {dst.rstrip('/')[:-len(NNC_SUFFIX)]}-nnc")
    sizes = {f: os.path.getsize(_join(src, f)) for g in groups for f in g["shards"]}
    sizes.update({f: os.path.getsize(_join(src, f)) for f in others})
    prog = _Progress(progress, sum(sizes.values()))
    out_groups = []
    with atomic_dir(dst, inputs=[src]) as tmp:
        for g in groups:
            fmt, shards, wm = None, [], {}
            for shard in g["shards"]:
                nnc = shard + NNC_SUFFIX
                with _about(shard, src):
                    path = _join(src, shard)
                    sfmt = nio.detect_format(path)
                    if fmt is not None and sfmt != fmt:
                        raise UsageError(f"shard is {sfmt}, but the other shards of {_key(g)} are {fmt}; "
                                         f"a weight set must use one format")
                    fmt = sfmt
                    os.makedirs(os.path.dirname(_join(tmp, nnc)), exist_ok=True)
                    infos = encode_file(path, _join(tmp, nnc), format=sfmt, metadata=metadata, limits=limits,
                                        progress=prog.shard(shard, sizes[shard]), options=opts, threads=threads)
                for t in infos:
                    wm[t.name] = nnc
                shards.append({"file": shard, "nnc": nnc, "bytes": sizes[shard]})
            out_groups.append({"index": g["index"], "metadata": g["metadata"], "format": fmt,
                               "shards": shards, "weight_map": wm})
        carried = _carry(src, tmp, others, prog)
        doc = {"nncodec_folder": FOLDER_VERSION, "kind": "model", "groups": out_groups, "files": carried}
        _write_index(tmp, doc)
    return doc


_FAMILIES = {".safetensors": ("safetensors",), ".bin": ("torch", "torch-legacy"), ".pt": ("torch", "torch-legacy"),
             ".pth": ("torch", "torch-legacy"), ".npz": ("npz",)}


def _shard_format(shard: str, recorded: str, format: str | None) -> str:
    """The format a shard is written in: its own, or ``format`` when that fits the shard's name."""
    if format is None or format == recorded:
        return recorded
    if format not in _SHARD_FORMATS:
        raise UsageError(f"unknown output format {format!r}; choose one of {', '.join(_SHARD_FORMATS)}")
    fam = _FAMILIES.get(os.path.splitext(shard)[1].lower())
    if fam is not None and format not in fam:
        raise UsageError(f"{shard}: cannot write a {format} shard under this name (the index names it); "
                         f"decode the folder without --format, or decode {shard}{NNC_SUFFIX} alone with --format")
    return format


def _safetensors_name(name: str) -> str:
    """The name ``save_pretrained`` gives the safetensors form of a torch weight file:
    ``pytorch_model-00001-of-00002.bin`` -> ``model-00001-of-00002.safetensors``."""
    head, _, base = name.rpartition("/")
    stem = os.path.splitext(base)[0]
    if stem.startswith("pytorch_model"):
        stem = "model" + stem[len("pytorch_model"):]
    return (head + "/" if head else "") + stem + ".safetensors"


def _plan(doc: dict, format: str | None) -> tuple:
    """What decode writes: ({shard file: (output name, format, convert)}, {new index: bytes}, index files not copied).

    ``format="safetensors"`` turns a torch weight set into safetensors shards under
    the names ``save_pretrained`` uses, with a new index to match; any other
    ``format`` must fit each shard's name (legacy or zip torch for ``.bin``).
    """
    shards, indexes, dropped = {}, {}, set()
    for g in doc["groups"]:
        convert = format == "safetensors" and g["format"] in ("torch", "torch-legacy")
        for s in g["shards"]:
            if convert:
                shards[s["file"]] = (_safetensors_name(s["file"]), "safetensors", True)
            else:
                shards[s["file"]] = (s["file"], _shard_format(s["file"], g["format"], format), False)
        if convert and g["index"] is not None:
            if not g["index"].endswith(".index.json"):
                raise UsageError(f"{g['index']}: cannot name a safetensors index after it; decode without --format")
            name = _safetensors_name(g["index"][: -len(".index.json")]) + ".index.json"
            wm = {t: shards[_nnc_file(g, v)][0] for t, v in g["weight_map"].items()}
            body = {"metadata": g["metadata"], "weight_map": dict(sorted(wm.items()))}
            if g["metadata"] is None:
                del body["metadata"]
            indexes[name] = (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()
            dropped.add(g["index"])
    names = [n for n, _, _ in shards.values()] + list(indexes) + [e["file"] for e in doc["files"]
                                                                  if e["file"] not in dropped]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UsageError(f"{dup[0]}: two outputs of the folder would have this name after converting to "
                         f"{format}; decode without --format")
    return shards, indexes, dropped


def _nnc_file(group: dict, nnc: str) -> str:
    return next(s["file"] for s in group["shards"] if s["nnc"] == nnc)


def decode_folder(src_dir, dst_dir, *, threads: int | None = None, progress=None, format: str | None = None,
                  limits: Limits = DEFAULT_LIMITS) -> dict:
    """Decode the folder ``src_dir`` written by :func:`encode_folder` to the model folder ``dst_dir``.

    Each ``.nnc`` file is decoded with :func:`nncodec.files.decode_file` to the
    shard's original name and format; every other file is copied byte for
    byte, the original index files among them. ``format`` may pick another
    format of the same family (``torch-legacy`` for ``.bin`` shards), or
    ``"safetensors"`` to turn ``pytorch_model-*.bin`` shards into
    ``model-*.safetensors`` with a ``model.safetensors.index.json`` to match
    (spec/FOLDERS.md §4). ``progress`` is called as
    ``progress(shard_file, bytes_done, bytes_total)``. ``dst_dir`` appears only
    when complete. Returns the folder's index.
    """
    from .files import decode_file

    src, dst = os.fspath(src_dir), os.fspath(dst_dir)
    doc = read_folder_index(src)
    if doc["kind"] != "model":
        raise UsageError(f"{src}: is a folder of updates (nncodec diff); apply it with nncodec patch BASE {src} OUT")
    if nio.format_from_extension(dst.rstrip("/\\")) is not None:
        raise UsageError(f"{dst}: an encoded folder decodes to a folder (its shards keep their names); "
                         f"give a folder name without a checkpoint extension")
    if format is not None and format not in _SHARD_FORMATS:
        raise UsageError(f"unknown output format {format!r}; choose one of {', '.join(_SHARD_FORMATS)}")
    plan, indexes, dropped = _plan(doc, format)
    others = [f for f in _other_files(src, doc) if f not in dropped]
    sizes = {s["nnc"]: os.path.getsize(_join(src, s["nnc"])) for g in doc["groups"] for s in g["shards"]}
    sizes.update({f: os.path.getsize(_join(src, f)) for f in others})
    prog = _Progress(progress, sum(sizes.values()))
    with atomic_dir(dst, inputs=[src]) as tmp:
        for g in doc["groups"]:
            for s in g["shards"]:
                name, fmt, convert = plan[s["file"]]
                target = _join(tmp, name)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with _about(s["nnc"], src):
                    if convert:
                        _convert(_join(src, s["nnc"]), target, limits)
                        prog.copied(name, sizes[s["nnc"]])
                    else:
                        decode_file(_join(src, s["nnc"]), target, format=fmt, limits=limits,
                                    progress=prog.shard(name, sizes[s["nnc"]]), threads=threads)
        for name, body in indexes.items():
            with open(_join(tmp, name), "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
        _carry(src, tmp, others, prog, _entries(doc))
    return doc


def _convert(nnc: str, target: str, limits: Limits) -> None:
    """Decode a torch shard's .nnc file to safetensors, marked ``{"format": "pt"}`` as transformers expects."""
    ck = nio.load_any(nnc, limits=limits)
    out = nio.Checkpoint(tensors=ck.tensors, aliases=ck.aliases, metadata={"format": "pt"}, format="safetensors")
    nio.write_checkpoint(target, out, "safetensors")


# ------------------------------------------------------------------ any folder's weights


class _Weights:
    """The weight sets of a model folder or an encoded folder, for compare, diff and patch."""

    def __init__(self, path, *, limits: Limits = DEFAULT_LIMITS):
        self.path = os.fspath(path)
        self.limits = limits
        self.groups = []  # (key, [(label, file path)], weight_map name -> file path or None)
        if is_encoded_folder(self.path):
            self.doc = read_folder_index(self.path)
            self.encoded = True
            for g in self.doc["groups"]:
                key = g["index"] or g["shards"][0]["file"]
                shards = [(s["file"], _join(self.path, s["nnc"])) for s in g["shards"]]
                wm = {n: _join(self.path, v) for n, v in g["weight_map"].items()}
                self.groups.append((key, shards, wm))
            self.others = _other_files(self.path, self.doc)
        else:
            self.doc = None
            self.encoded = False
            groups, self.others = _scan(self.path)
            for g in groups:
                shards = [(s, _join(self.path, s)) for s in g["shards"]]
                wm = None if g["weight_map"] is None else {n: _join(self.path, v) for n, v in g["weight_map"].items()}
                self.groups.append((_key(g), shards, wm))
        self._cache = (None, None)
        self._names = {}  # file path -> its tensor names, for sets without a weight map

    def match(self, key: str):
        for g in self.groups:
            if g[0] == key:
                return g
        return self.groups[0]

    def load(self, path: str, what: str) -> nio.Checkpoint:
        """One file's checkpoint (the last one loaded is kept, so consecutive lookups read it once)."""
        from .federated.files import read_any

        if self._cache[0] != path:
            self._cache = (None, None)
            with _about(what, self.path):
                self._cache = (path, read_any(path, limits=self.limits))
        return self._cache[1]

    @staticmethod
    def names(group, loader) -> list:
        key, shards, wm = group
        if wm is not None:
            return list(wm)
        out = []
        for label, p in shards:
            out += loader(p, label).names()
        return out

    def where(self, group, name: str, loader):
        """The file of ``group`` holding tensor ``name``, or None."""
        key, shards, wm = group
        if wm is not None:
            return wm.get(name)
        for label, p in shards:
            if p not in self._names:
                self._names[p] = set(loader(p, label).names())
            if name in self._names[p]:
                return p
        return None


def _labels(group) -> dict:
    return {p: label for label, p in group[1]}


def compare_folders(a_dir, b_dir, *, limits: Limits = DEFAULT_LIMITS) -> tuple:
    """Compare two folders tensor by tensor, shard by shard.

    Either side may be a model folder or an encoded one. Each weight set of A is
    compared with the set of B with the same index (or single file) name, else
    with B's first set. Returns ``(shards, overall, only_a, only_b)``: ``shards``
    lists ``(shard_file, [TensorDiff, ...])`` in A's order, ``overall`` is the
    "(all)" row over every tensor.
    """
    from .compare import diff_tensor, overall_diff

    A, B = _Weights(a_dir, limits=limits), _Weights(b_dir, limits=limits)
    out, every, only_a, seen_b = [], [], [], {}
    for ga in A.groups:
        gb = B.match(ga[0])
        blabel = _labels(gb)
        seen = seen_b.setdefault(gb[0], set())
        for label, path in ga[1]:
            ck = A.load(path, label)
            tensors = {n: ck.get(n) for n in ck.names()}
            A._cache = (None, None)  # A is read shard by shard once; B keeps its last shard
            by_b = {}
            for n in tensors:
                p = B.where(gb, n, B.load)
                if p is None:
                    only_a.append(n)
                else:
                    by_b.setdefault(p, []).append(n)
            diffs = []
            for p, names in by_b.items():
                bck = B.load(p, blabel[p])
                for n in names:
                    with _about(label, A.path):
                        diffs.append(diff_tensor(n, tensors[n], bck.get(n)))
                    seen.add(n)
            order = {n: i for i, n in enumerate(tensors)}
            diffs.sort(key=lambda d: order[d.name])
            out.append((label, diffs))
            every += diffs
            del tensors
    only_b = [n for gb in B.groups if gb[0] in seen_b for n in B.names(gb, B.load) if n not in seen_b[gb[0]]]
    return out, overall_diff(every), only_a, only_b


def _digest(path: str) -> tuple:
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while True:
            block = f.read(_COPY_BLOCK)
            if not block:
                return n, h.hexdigest()
            h.update(block)
            n += len(block)


def compare_files(a_dir, b_dir) -> dict:
    """The files that are not weights, compared by size and SHA-256 (an encoded folder's from its index).

    Returns ``{"same": [...], "differ": [...], "only_in_a": [...], "only_in_b": [...]}``.
    """
    def files(path):
        w = _Weights(path)
        if w.doc is not None:
            return {e["file"]: (e["bytes"], e["sha256"]) for e in w.doc["files"]}
        return {f: _digest(_join(w.path, f)) for f in w.others}

    fa, fb = files(os.fspath(a_dir)), files(os.fspath(b_dir))
    return {"same": [f for f in fa if f in fb and fa[f] == fb[f]],
            "differ": [f for f in fa if f in fb and fa[f] != fb[f]],
            "only_in_a": [f for f in fa if f not in fb], "only_in_b": [f for f in fb if f not in fa]}


def folder_info(path) -> dict:
    """A summary of an encoded folder: per shard and in total, tensors, raw and stored bytes."""
    from .api import open as nopen

    path = os.fspath(path)
    doc = read_folder_index(path)
    shards = []
    for g in doc["groups"]:
        for s in g["shards"]:
            p = _join(path, s["nnc"])
            with _about(s["nnc"], path), nopen(p) as r:
                infos = r.infos()
            shards.append({
                "file": s["file"], "nnc": s["nnc"], "format": g["format"], "index": g["index"],
                "tensors": len(infos),
                "lossy": sum(1 for t in infos if t.alias_of is None and t.pipeline.array_stages),
                "raw_bytes": sum(t.raw_bytes for t in infos if t.alias_of is None),
                "stored_bytes": sum(t.stored_bytes for t in infos if t.alias_of is None),
                "source_bytes": s["bytes"], "nnc_bytes": os.path.getsize(p),
            })
    others = _other_files(path, doc)
    total = {k: sum(s[k] for s in shards) for k in ("tensors", "lossy", "raw_bytes", "stored_bytes",
                                                     "source_bytes", "nnc_bytes")}
    total["files"] = len(others)
    total["files_bytes"] = sum(os.path.getsize(_join(path, f)) for f in others)
    return {"folder": path, "kind": doc["kind"], "shards": shards, "files": others, "total": total}


# ------------------------------------------------------------------ updates


def diff_folders(base_dir, new_dir, out_dir, *, metadata: dict | None = None, limits: Limits = DEFAULT_LIMITS,
                 opts=None, progress=None, **kw) -> dict:
    """Write the update from the folder ``base_dir`` to the folder ``new_dir`` as the folder ``out_dir``.

    Either input may be a model folder or an encoded one. Each shard of NEW
    becomes ``<shard>.nnc``, an update (spec/UPDATES.md) against the base
    tensors of the same names, found through BASE's index; NEW's other files
    are copied byte for byte. Options as :func:`nncodec.federated.diff_files`.
    Returns the index written.
    """
    from .federated.update import write_update

    base, new, out = os.fspath(base_dir), os.fspath(new_dir), os.fspath(out_dir)
    B, N = _Weights(base, limits=limits), _Weights(new, limits=limits)
    total = sum(os.path.getsize(p) for g in N.groups for _, p in g[1])
    prog = _Progress(progress, total + sum(os.path.getsize(_join(new, f)) for f in N.others))
    out_groups = []
    with atomic_dir(out, inputs=[base, new]) as tmp:
        for gn in N.groups:
            gb = B.match(gn[0])
            blabel = _labels(gb)
            fmt, shards, wm, used = None, [], {}, set()
            for label, path in gn[1]:
                size = os.path.getsize(path)
                nck = N.load(path, label)
                N._cache = (None, None)
                sfmt = nck.format if nck.format in _SHARD_FORMATS else "safetensors"
                fmt = fmt or sfmt
                model = dict(nck.tensors)
                for a, t in nck.aliases.items():
                    model[a] = nck.tensors[t]
                sub = {}
                for n in model:
                    p = B.where(gb, n, B.load)
                    if p is not None:
                        sub[n] = B.load(p, blabel[p]).get(n)
                used.update(sub)
                md = {k: v for k, v in nck.metadata.items() if not k.startswith("nncodec.update.")}
                md[nio.SOURCE_FORMAT_KEY] = sfmt
                if metadata:
                    md.update(metadata)
                nnc = label + NNC_SUFFIX
                target = _join(tmp, nnc)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with _about(label, new), open(target, "wb") as f:
                    write_update(f, model, sub, opts=opts, metadata=md, aliases=dict(nck.aliases), limits=limits,
                                 **kw)
                prog.copied(label, size)
                for n in model:
                    wm[n] = nnc
                shards.append({"file": label, "nnc": nnc, "bytes": size})
                del model, sub, nck
            removed = [n for n in B.names(gb, B.load) if n not in used and n not in wm]
            index, index_md = gn[0] if gn[2] is not None else None, None
            if N.doc is not None:
                g = next(g for g in N.doc["groups"] if (g["index"] or g["shards"][0]["file"]) == gn[0])
                index, index_md = g["index"], g["metadata"]
            elif index is not None:
                raw = _read_json(_join(new, index), "weight index")
                index_md = raw.get("metadata")
            grp = {"index": index, "metadata": index_md, "format": fmt, "shards": shards, "weight_map": wm}
            if removed:
                grp["removed"] = removed
            out_groups.append(grp)
        carried = _carry(new, tmp, N.others, prog, None if N.doc is None else _entries(N.doc))
        doc = {"nncodec_folder": FOLDER_VERSION, "kind": "update", "groups": out_groups, "files": carried}
        _write_index(tmp, doc)
    return doc


def patch_folders(base_dir, update_dir, out_dir, *, format: str | None = None, limits: Limits = DEFAULT_LIMITS,
                  progress=None) -> dict:
    """Apply the update folder ``update_dir`` (from :func:`diff_folders`) to ``base_dir``; write ``out_dir``.

    Each update shard is applied to the base tensors of the same names and
    written under the new shard's name and format; the update's other files
    (NEW's config, tokenizer, index json) are copied byte for byte. Raises
    :class:`~nncodec.errors.BaseMismatchError`, naming the shard, when the base
    is not the one the update was made against. Returns the update's index.
    """
    from .federated.update import base_sha256, read_update

    base, update, out = os.fspath(base_dir), os.fspath(update_dir), os.fspath(out_dir)
    doc = read_folder_index(update)
    if doc["kind"] != "update":
        raise UsageError(f"{update}: is an encoded model folder, not an update; decode it with nncodec decode")
    others = _other_files(update, doc)
    B = _Weights(base, limits=limits)
    total = sum(os.path.getsize(_join(update, s["nnc"])) for g in doc["groups"] for s in g["shards"])
    prog = _Progress(progress, total + sum(os.path.getsize(_join(update, f)) for f in others))
    with atomic_dir(out, inputs=[base, update]) as tmp:
        for g in doc["groups"]:
            gb = B.match(g["index"] or g["shards"][0]["file"])
            blabel = _labels(gb)
            for s in g["shards"]:
                names = [n for n, v in g["weight_map"].items() if v == s["nnc"]]
                sub = {}
                for n in names:
                    p = B.where(gb, n, B.load)
                    if p is not None:
                        sub[n] = B.load(p, blabel[p]).get(n)
                upath = _join(update, s["nnc"])
                with _about(s["nnc"], update):
                    reader = read_update(upath, sub, limits=limits, base_hash=base_sha256(sub), what=upath)
                    tensors = {n: arr for n, arr in reader if n not in reader.aliases}
                    md = {k: v for k, v in reader.metadata.items() if not k.startswith("nncodec.update.")}
                    fmt = _shard_format(s["file"], md.get(nio.SOURCE_FORMAT_KEY, g["format"]), format)
                    ck = nio.Checkpoint(tensors=tensors, aliases=dict(reader.aliases), metadata=md, format=fmt)
                    target = _join(tmp, s["file"])
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    nio.write_checkpoint(target, ck, fmt)
                prog.copied(s["file"], os.path.getsize(upath))
                del tensors, sub, ck
        _carry(update, tmp, others, prog, _entries(doc))
    return doc
