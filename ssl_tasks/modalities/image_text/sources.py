"""Image–caption ingestion sources: a caption table next to image files, or WebDataset-style tars.

Both are registered in :data:`ssl_tasks.data.sources.SOURCES` with the signature
``fn(path, *, test_fraction, split_seed, **options) -> PairSourceResult`` and validate their
options before reading anything. ``info`` is deterministic (the path as given, content hashes,
the options, counts; no timestamps), so two ingests of the same input are byte-identical.

Sources:

* ``image_text_table``: a ``.tsv`` (quoting disabled) / ``.csv`` / ``.jsonl`` table with an image
  path column and one or more caption columns; rows naming the same image are merged.
* ``image_text_tar``: a ``.tar`` (or a folder of ``.tar`` shards) of ``<key>.<ext>`` members:
  ``jpg``/``jpeg``/``png``/``webp`` image, ``txt`` captions, optional ``cls`` label.

Images, the same for both sources and for the image modality's ``image_folder`` (one function,
:func:`ssl_tasks.modalities.image.normalize.normalize_image`): opened with PIL and alpha-composited onto
the ``background`` colour (``white``, the default, or ``black``) so transparent pixels (most clip
art) get one fixed colour rather than whatever RGB a transparent pixel happens to hold; padded to a
square with that colour, centred; resized to ``image_size`` x ``image_size`` (default 64, 8..1024)
with bicubic resampling (Pillow's ``reducing_gap=3``: a box pre-reduction by an integer factor while
the image stays >= 3x the target, which halves ingest time and is within a few grey levels of the
full bicubic). Stored as uint8 (3, S, S): the aspect ratio is kept and nothing is cropped.

Bad rows are recorded, not fatal (as the text sources keep undecodable bytes): a missing image, an
image that does not decode, and a path that is absolute, has a ``..`` part or resolves (symlinks
included) outside the dataset root give the row an ``error`` and an all-zero image; an escaping path
is never opened. Empty captions are kept as ``""``. Validation then fails naming those rows.
Structural problems (a missing column, an unsupported extension, no rows, bad or unknown options,
one image with two labels, ...) raise :class:`~ssl_tasks.core.errors.UserError` before any image
is read. The split is by image (an image and all its captions land in one split): seeded, and
stratified by label when there are labels.
"""

from __future__ import annotations

import hashlib
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ssl_tasks.core.errors import UserError
from ssl_tasks.core.io import sha256_file
from ssl_tasks.data.shards import UNLABELED
from ssl_tasks.data.sources import SOURCES, open_tar, source_kind, stratified_split, tar_read, visible
from ssl_tasks.data.tables import TABLE_FORMATS, decode_text, table_rows
from ssl_tasks.modalities.image.normalize import (
    DECODE_ERRORS,
    check_background,
    check_image_size,
    normalize_image,
)
from ssl_tasks.modalities.image_text.shards import PairRecord, PairSplit, unsafe_path
from ssl_tasks.modalities.text.sources import _label_names, _name, _options, _scrub

MODALITY = "image_text"
DEFAULT_IMAGE_SIZE = 64
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")  # tar members; table rows may name any file PIL reads
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_IMAGE_DEFAULTS = {"image_size": DEFAULT_IMAGE_SIZE, "background": "white"}

_takes_pair_options = source_kind(MODALITY)


@dataclass
class PairSourceResult:
    """What a pair source hands to the writer: splits, class names, image shape (3, S, S), provenance."""

    splits: dict[str, PairSplit]
    label_names: list[str]
    image_shape: tuple[int, int, int]
    info: dict[str, Any]


@dataclass
class _Pair:
    """One image being assembled: its stored path, captions in order, label text, and any error."""

    image: str
    where: str  # file:line or archive:member of its first mention, for error messages
    captions: list[str] = field(default_factory=list)
    label: str | None = None
    error: str | None = None
    sha256: str | None = None
    rows: int = 0  # table rows merged into this image


# --------------------------------------------------------------------------- options


def _image_size(source: str, value: Any) -> int:
    return int(check_image_size(source, value))  # type: ignore[arg-type]


def _background(source: str, value: Any) -> tuple[int, int, int]:
    return check_background(source, value)


def _caption_columns(source: str, value: Any) -> tuple[str, ...]:
    """``caption_column``: one name, or a non-empty list of distinct names (one caption per column)."""
    names = value if isinstance(value, (list, tuple)) else [value]
    if not names:
        raise UserError(f"source {source!r}: option caption_column must name at least one column; got []")
    cols = tuple(str(_name(source, "caption_column", v)) for v in names)
    dup = next((c for c in cols if cols.count(c) > 1), None)
    if dup is not None:
        raise UserError(f"source {source!r}: option caption_column lists {dup!r} twice")
    return cols


def _separator(source: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise UserError(f"source {source!r}: option caption_separator must be a non-empty string or null; got {value!r}")
    return value


def _label_depth(source: str, value: Any, label_column: str | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserError(f"source {source!r}: option label_depth must be an integer >= 1 or null; got {value!r}")
    if label_column is None:
        raise UserError(f"source {source!r}: option label_depth={value} needs a label_column to cut")
    return int(value)


def _root(source: str, value: Any, table: Path) -> Path:
    """``root``: the folder image paths are relative to; a relative root is relative to the table's folder."""
    if value is None:
        return table.parent
    if not isinstance(value, (str, Path)) or not str(value):
        raise UserError(f"source {source!r}: option root must be a folder path; got {value!r}")
    root = table.parent / value
    if not root.is_dir():
        raise UserError(f"source {source!r}: option root {str(value)!r} is not a folder (looked at {root})")
    return root


# --------------------------------------------------------------------------- images


_DECODE_ERRORS = DECODE_ERRORS


def render(data: bytes, size: int, background: tuple[int, int, int]) -> np.ndarray:
    """Encoded image bytes -> uint8 (3, size, size): the image modality's one normalisation
    (:func:`ssl_tasks.modalities.image.normalize.normalize_image`: composited on ``background``, padded square,
    bicubic). Raises what PIL raises for bytes it cannot decode."""
    return normalize_image(data, mode="RGB", size=size, background=background)


def _decode_into(out: np.ndarray, pair: _Pair, data: bytes, size: int, background: tuple[int, int, int]) -> None:
    """Render ``data`` into ``out`` (3, S, S) and record its sha256, or record why it does not decode."""
    from PIL import Image

    pair.sha256 = hashlib.sha256(data).hexdigest()
    try:
        out[...] = render(data, size, background)
    except (*_DECODE_ERRORS, Image.DecompressionBombError) as e:
        out[...] = 0
        pair.error = f"image does not decode: {type(e).__name__}: {e}"


def _splits(pairs: list[_Pair], images: np.ndarray, labels: np.ndarray, test_fraction: float, seed: int
            ) -> dict[str, PairSplit]:
    """Seeded (stratified when labelled) train/test PairSplits by image."""
    train, test = stratified_split(labels, test_fraction, seed)

    def take(idx: np.ndarray) -> PairSplit:
        records = [PairRecord(tuple(pairs[i].captions), pairs[i].image, pairs[i].sha256, pairs[i].error) for i in idx]
        return PairSplit(images=images[idx], records=records, labels=labels[idx])

    return {"train": take(train), "test": take(test)}


def _encode_labels(pairs: Sequence[_Pair]) -> tuple[list[str], np.ndarray]:
    """(label names sorted as text sources sort them, int64 label per pair; -1 where none)."""
    names = _label_names([p.label for p in pairs if p.label is not None])
    lookup = {name: k for k, name in enumerate(names)}
    labels = np.array([UNLABELED if p.label is None else lookup[p.label] for p in pairs], dtype=np.int64)
    return names, labels


def _counts(pairs: Sequence[_Pair]) -> dict[str, int]:
    return {
        "num_images": len(pairs),
        "num_captions": sum(len(p.captions) for p in pairs),
        "images_with_errors": sum(p.error is not None for p in pairs),
    }


# --------------------------------------------------------------------------- tables


def _table_format(path: Path) -> str:
    if path.is_dir():
        raise UserError(
            f"source 'image_text_table' reads one {', '.join(TABLE_FORMATS)} table file, but {path} is a folder "
            "(for a folder of .tar shards use source 'image_text_tar')"
        )
    try:
        return TABLE_FORMATS[path.suffix.lower()]
    except KeyError:
        raise UserError(
            f"{path}: unsupported table extension {path.suffix!r}; source 'image_text_table' reads "
            f"{', '.join(TABLE_FORMATS)} (a .tar of images and captions: source 'image_text_tar')"
        ) from None


def _clean_caption(value: str, separator: str | None) -> str:
    """Stripped caption; with a separator, ``a|b|c`` becomes ``a b c`` (empty parts dropped)."""
    value = _scrub(value)
    if separator is not None:
        return " ".join(part.strip() for part in value.split(separator) if part.strip())
    return value.strip()


def _row_captions(where: str, row: dict[str, Any], columns: tuple[str, ...], separator: str | None) -> list[str]:
    """One caption per caption column (a JSONL list cell gives one per element)."""
    captions: list[str] = []
    for col in columns:
        value = row[col]
        values = value if isinstance(value, list) else ["" if value is None else value]
        for v in values:
            if not isinstance(v, str):
                raise UserError(
                    f"{where}: caption column {col!r} must hold a string (or in JSONL a list of strings), "
                    f"got {type(v).__name__}"
                )
            captions.append(_clean_caption(v, separator))
    return captions


def _row_label(where: str, row: dict[str, Any], column: str, depth: int | None) -> str:
    label = row[column]
    if isinstance(label, int) and not isinstance(label, bool):
        label = str(label)
    if not isinstance(label, str):
        raise UserError(f"{where}: label {column!r} must be a string or an integer, got {label!r}")
    label = _scrub(label).strip()
    if depth is not None:
        label = "/".join(label.split("/")[:depth]).strip()
    if not label:
        raise UserError(f"{where}: empty label in {column!r}; with label_column set every row needs one")
    return label


def _row_image(where: str, row: dict[str, Any], column: str) -> str:
    """The image path of a row, normalised (``./a//b.png`` -> ``a/b.png``; ``..`` parts are kept)."""
    value = row[column]
    if not isinstance(value, str):
        raise UserError(f"{where}: image column {column!r} must be a path string, got {type(value).__name__}")
    value = _scrub(value).strip()
    if not value:
        raise UserError(f"{where}: empty image path in column {column!r}; every row needs one")
    return PurePosixPath(value).as_posix()


def _table_pairs(
    path: Path, fmt: str, content: str, image_col: str, caption_cols: tuple[str, ...], separator: str | None,
    label_col: str | None, depth: int | None,
) -> tuple[list[_Pair], int]:
    """(one _Pair per distinct image in first-mention order, number of rows): rows naming one image merge."""
    needed = [(image_col, "image_column"), *((c, "caption_column") for c in caption_cols)]
    if label_col is not None:
        needed.append((label_col, "label_column"))
    pairs: dict[str, _Pair] = {}
    n_rows = 0
    for n, row in table_rows(path, fmt, content, needed):
        where = f"{path}:{n}"
        n_rows += 1
        image = _row_image(where, row, image_col)
        label = None if label_col is None else _row_label(where, row, label_col, depth)
        pair = pairs.setdefault(image, _Pair(image=image, where=where, label=label))
        if pair.label != label:
            raise UserError(
                f"{where}: image {image!r} has label {label!r} here but {pair.label!r} at {pair.where}; "
                "an image can have one label only"
            )
        pair.captions.extend(_row_captions(where, row, caption_cols, separator))
        pair.rows += 1
    if not pairs:
        raise UserError(f"{path} is empty: no rows")
    return list(pairs.values()), n_rows


def _read_under(root: Path, rel: str) -> tuple[bytes | None, str | None]:
    """(bytes, None) of ``root/rel``, or (None, why not): a path leaving ``root`` is never opened."""
    if unsafe_path(rel):
        return None, f"path escapes the dataset root: {rel}"
    try:
        resolved = (root / rel).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop
        return None, f"cannot resolve image path {rel}: {e}"
    if resolved != root and root not in resolved.parents:
        return None, f"path escapes the dataset root (through a symlink): {rel}"
    if not resolved.is_file():
        return None, f"missing image file {rel}"
    try:
        return resolved.read_bytes(), None
    except OSError as e:
        return None, f"cannot read image file {rel}: {e.strerror or e}"


@SOURCES.register("image_text_table")
@_takes_pair_options
def image_text_table(path: Path | None, *, test_fraction: float, split_seed: int, **options: Any) -> PairSourceResult:
    """A TSV/CSV/JSONL table of image paths and captions (and labels), by extension.

    Options: ``image_column`` (default ``image``), ``caption_column`` (default ``caption``; a name or
    a list of names, each giving one caption per row), ``caption_separator`` (default none: e.g.
    ``|`` turns ``a|b|c`` into ``a b c``), ``label_column`` (default none: unlabeled),
    ``label_depth`` (keep the first k ``/``-separated parts of a label), ``root`` (default: the
    table's folder; a relative root is relative to it), ``image_size``, ``background``.
    """
    source = "image_text_table"
    defaults = {"image_column": "image", "caption_column": "caption", "caption_separator": None,
                "label_column": None, "label_depth": None, "root": None, **_IMAGE_DEFAULTS}
    opts = _options(source, options, defaults)
    image_col = str(_name(source, "image_column", opts["image_column"]))
    caption_cols = _caption_columns(source, opts["caption_column"])
    separator = _separator(source, opts["caption_separator"])
    label_col = _name(source, "label_column", opts["label_column"], optional=True)
    depth = _label_depth(source, opts["label_depth"], label_col)
    size = _image_size(source, opts["image_size"])
    background = _background(source, opts["background"])
    for col, option in ((image_col, "image_column"), (label_col, "label_column")):
        if col in caption_cols:
            raise UserError(f"source {source!r}: caption_column and {option} both name {col!r}")
    if label_col == image_col:
        raise UserError(f"source {source!r}: image_column and label_column both name {image_col!r}")
    assert path is not None
    fmt = _table_format(path)
    root = _root(source, opts["root"], path).resolve()
    content, digest = decode_text(path)
    pairs, n_rows = _table_pairs(path, fmt, content, image_col, caption_cols, separator, label_col, depth)
    names, labels = _encode_labels(pairs)
    stratified_split(labels, test_fraction, split_seed)  # a split that cannot be made fails before decoding

    images = np.zeros((len(pairs), 3, size, size), dtype=np.uint8)
    for i, pair in enumerate(pairs):
        data, pair.error = _read_under(root, pair.image)
        if data is not None:
            _decode_into(images[i], pair, data, size, background)
    norm_opts = {
        "image_column": image_col,
        "caption_column": list(caption_cols) if isinstance(opts["caption_column"], (list, tuple)) else caption_cols[0],
        "caption_separator": separator,
        "label_column": label_col,
        "label_depth": depth,
        "root": None if opts["root"] is None else str(opts["root"]),
        "image_size": size,
        "background": opts["background"],
    }
    return PairSourceResult(
        splits=_splits(pairs, images, labels, test_fraction, split_seed),
        label_names=names,
        image_shape=(3, size, size),
        info={
            "format": fmt,
            "path": str(path),
            "table_sha256": digest,
            "options": norm_opts,
            "split": "random" if label_col is None else "stratified",
            "num_rows": n_rows,
            **_counts(pairs),
            "rows_with_errors": sum(p.rows for p in pairs if p.error is not None),
        },
    )


# --------------------------------------------------------------------------- WebDataset tars


def _tar_shards(path: Path) -> tuple[list[Path], str]:
    """(the tar files to read, sorted by name; "tar" or "directory")."""
    if not path.is_dir():
        return [path], "tar"
    shards = sorted(
        (p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(TAR_SUFFIXES)),
        key=lambda p: p.name,
    )
    if not shards:
        raise UserError(f"no {', '.join(TAR_SUFFIXES)} shards in folder {path}")
    return shards, "directory"


def _tar_entries(path: Path, tf: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Regular, visible members sorted by name (a later duplicate of a name wins, as on extraction).

    Unlike :func:`ssl_tasks.data.sources.tar_members`, names that are absolute or have ``..`` parts
    are kept, so the caller can record them as errors instead of silently dropping them.
    """
    members: dict[str, tarfile.TarInfo] = {}
    try:
        for m in tf:
            parts = PurePosixPath(m.name.lstrip("/")).parts
            if m.isfile() and not m.issparse() and parts and visible([p for p in parts if p != ".."]):
                members[m.name] = m
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path}: corrupt tar archive ({e})") from None
    return [members[k] for k in sorted(members, key=lambda n: ("/".join(PurePosixPath(n.lstrip("/")).parts), n))]


def _member_key(name: str) -> tuple[str, str] | None:
    """WebDataset key and lower-case extension: ``a/b/0001.seg.png`` -> (``a/b/0001``, ``seg.png``)."""
    parts = PurePosixPath(name.lstrip("/")).parts
    stem, dot, ext = parts[-1].partition(".")
    if not dot or not stem or not ext:
        return None
    return "/".join((*parts[:-1], stem)), ext.lower()


def _member_kind(ext: str) -> str | None:
    if ext in IMAGE_EXTENSIONS:
        return "image"
    return ext if ext in ("txt", "cls") else None


def _tar_captions(data: bytes) -> list[str]:
    """Each non-blank line of a ``.txt`` member is one caption; none gives one empty caption."""
    text = _scrub(data.decode("utf-8-sig", errors="replace")).replace("\r\n", "\n").replace("\r", "\n")
    return [line.strip() for line in text.split("\n") if line.strip()] or [""]


def _tar_label(where: str, data: bytes) -> str:
    try:
        label = data.decode("utf-8-sig").strip()
    except UnicodeDecodeError as e:
        raise UserError(f"{where}: class label is not UTF-8 ({e.reason})") from None
    if not label:
        raise UserError(f"{where}: empty class label; a .cls member holds a class name or an integer")
    return label


def _group_shard(
    shard: Path, tf: tarfile.TarFile, pairs: dict[str, _Pair], seen_in: dict[str, Path]
) -> tuple[list[tuple[str, tarfile.TarInfo]], int]:
    """Add this shard's keys to ``pairs`` (captions and labels read); return its (key, image member)s and ignored count."""
    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
    ignored = 0
    for m in _tar_entries(shard, tf):
        key_ext = _member_key(m.name)
        kind = None if key_ext is None else _member_kind(key_ext[1])
        if key_ext is None or kind is None:
            ignored += 1
            continue
        key = key_ext[0]
        if seen_in.setdefault(key, shard) != shard:
            raise UserError(f"{shard}:{m.name}: key {key!r} also appears in {seen_in[key]}; keep a sample in one shard")
        group = groups.setdefault(key, {})
        if kind in group:
            raise UserError(f"{shard}: key {key!r} has two {kind} members, {group[kind].name} and {m.name}; keep one")
        group[kind] = m
    reads = sorted(((key, kind, m) for key, g in groups.items() for kind, m in g.items() if kind != "image"),
                   key=lambda t: t[2].offset_data)  # archive order: compressed tars only read forwards cheaply
    for key, g in groups.items():
        image = g.get("image")
        pair = pairs[key] = _Pair(image=image.name if image else key, where=f"{shard}:{(image or next(iter(g.values()))).name}")
        unsafe = sorted(m.name for m in g.values() if unsafe_path(m.name))
        if unsafe:
            pair.error = f"member name escapes the archive root: {unsafe[0]}"
        elif image is None:
            pair.error = "missing image"
        pair.captions = [""]
    for key, kind, m in reads:
        if unsafe_path(m.name):
            continue  # never read
        data = tar_read(shard, tf, m)
        if kind == "txt":
            pairs[key].captions = _tar_captions(data)
        else:
            pairs[key].label = _tar_label(f"{shard}:{m.name}", data)
    images = [(key, g["image"]) for key, g in groups.items() if "image" in g and pairs[key].error is None]
    return images, ignored


@SOURCES.register("image_text_tar")
@_takes_pair_options
def image_text_tar(path: Path | None, *, test_fraction: float, split_seed: int, **options: Any) -> PairSourceResult:
    """A WebDataset-style ``.tar`` (or a folder of ``.tar`` shards, read in name order).

    Members are grouped by key, the member name without its extension(s): ``<key>.jpg|jpeg|png|webp``
    is the image, ``<key>.txt`` its captions (one per non-blank line), ``<key>.cls`` an optional label
    (a class name or an integer). A key without an image, or with a member named outside the archive
    (absolute, ``..``: never read), is recorded as an error; one without ``.txt`` gets the caption ``""``.
    Options: ``image_size``, ``background``.
    """
    source = "image_text_tar"
    opts = _options(source, options, dict(_IMAGE_DEFAULTS))
    size = _image_size(source, opts["image_size"])
    background = _background(source, opts["background"])
    assert path is not None
    shards, container = _tar_shards(path)
    pairs: dict[str, _Pair] = {}
    seen_in: dict[str, Path] = {}
    to_decode: list[tuple[Path, list[tuple[str, tarfile.TarInfo]]]] = []
    ignored = 0
    for shard in shards:
        with open_tar(shard) as tf:
            found, n_ignored = _group_shard(shard, tf, pairs, seen_in)
        to_decode.append((shard, found))
        ignored += n_ignored
    if not pairs:
        raise UserError(f"{path}: no samples found (members named <key>.{{{','.join(IMAGE_EXTENSIONS)},txt,cls}})")
    order = list(pairs.values())
    index = {key: i for i, key in enumerate(pairs)}
    names, labels = _encode_labels(order)
    stratified_split(labels, test_fraction, split_seed)  # a split that cannot be made fails before decoding

    images = np.zeros((len(order), 3, size, size), dtype=np.uint8)
    for shard, found in to_decode:
        with open_tar(shard) as tf:
            for key, m in sorted(found, key=lambda t: t[1].offset_data):
                _decode_into(images[index[key]], pairs[key], tar_read(shard, tf, m), size, background)
    return PairSourceResult(
        splits=_splits(order, images, labels, test_fraction, split_seed),
        label_names=names,
        image_shape=(3, size, size),
        info={
            "format": "webdataset",
            "path": str(path),
            "container": container,
            "files_sha256": {p.name: sha256_file(p) for p in shards},
            "options": {"image_size": size, "background": opts["background"]},
            "split": "stratified" if names else "random",
            "ignored_members": ignored,
            **_counts(order),
        },
    )
