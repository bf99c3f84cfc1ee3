"""Image ingestion sources: turn a user's data into uint8 (C, H, W) splits for :func:`write_dataset`.

Every source here is registered in :data:`ssl_tasks.data.sources.SOURCES` (unmarked: the image modality writes
what it returns) and has the signature ``fn(path, *, test_fraction, split_seed) -> SourceResult``. Sources read
their input in place (directories, tar archives, gzip files), never write anything, and describe the input in
``SourceResult.info`` deterministically (the path as given, content hashes; no timestamps), so two ingests of the
same input give byte-identical datasets.

Sources:

* ``sklearn_digits``: the 1797 8x8 digits bundled with scikit-learn (no path).
* ``idx``: a folder of MNIST-style IDX files (optionally gzipped); official train/test split.
* ``cifar``: CIFAR-10/100 python pickle batches in a folder or tar archive; official split.
  Pickles are read with a restricted unpickler that only rebuilds numpy arrays.
* ``image_folder``: PNG/JPEG files in a folder or tar archive, either in class sub-folders
  (labelled) or flat (unlabeled); options ``image_size`` and ``background`` (the image modality's one
  normalisation, :mod:`ssl_tasks.modalities.image.normalize`, shared with the image–caption sources).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import pickle
import re
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ssl_tasks.core.errors import UserError
from ssl_tasks.data.shards import UNLABELED
from ssl_tasks.data.sources import (
    SOURCES,
    open_tar,
    pathless,
    source_kind,
    stratified_split,
    tar_members,
    tar_read,
    visible,
)
from ssl_tasks.modalities.image.normalize import DECODE_ERRORS, check_background, check_image_size, normalize_image
from ssl_tasks.modalities.image.shards import SplitData

#: Images per chunk handed to the shard writer.
CHUNK = 1024


@dataclass
class SourceResult:
    """What an image source hands to the writer: splits, image shape, class names, provenance."""

    splits: dict[str, SplitData]
    image_shape: tuple[int, int, int]
    label_names: list[str]
    info: dict[str, Any]


# --------------------------------------------------------------------------- splitting


def _array_chunks(images: np.ndarray, idx: np.ndarray | None) -> Iterator[np.ndarray]:
    """Chunks of ``images`` (optionally gathered at ``idx``) in order."""
    n = len(images) if idx is None else len(idx)
    for i in range(0, n, CHUNK):
        yield images[i : i + CHUNK] if idx is None else images[idx[i : i + CHUNK]]


def _split_arrays(images: np.ndarray, labels: np.ndarray, test_fraction: float, seed: int) -> dict[str, SplitData]:
    """Stratified train/test SplitData over in-memory arrays."""
    train, test = stratified_split(labels, test_fraction, seed)
    return {
        "train": SplitData(labels[train], _array_chunks(images, train)),
        "test": SplitData(labels[test], _array_chunks(images, test)),
    }


def _numeric_names(labels: Sequence[np.ndarray]) -> list[str]:
    n = max((int(lab.max()) + 1 for lab in labels if len(lab)), default=0)
    return [str(i) for i in range(n)]


# --------------------------------------------------------------------------- sklearn digits


@SOURCES.register("sklearn_digits")
@pathless
def sklearn_digits(path: Path | None, *, test_fraction: float, split_seed: int) -> SourceResult:
    """scikit-learn's 8x8 digits (values 0..16 scaled to 0..255), stratified split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(np.asarray(d.images, dtype=np.float64) * 255 / 16).astype(np.uint8)[:, None]
    labels = np.asarray(d.target, dtype=np.int64)
    return SourceResult(
        splits=_split_arrays(images, labels, test_fraction, split_seed),
        image_shape=(1, 8, 8),
        label_names=[str(i) for i in range(10)],
        info={"dataset": "sklearn.datasets.load_digits", "num_samples": int(len(labels)), "split": "stratified"},
    )


# --------------------------------------------------------------------------- IDX (MNIST)

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dims
_IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dim
FASHION_MNIST_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def _find_idx(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    expected = ", ".join(f"{s}[.gz]" for pair in _IDX_FILES.values() for s in pair)
    raise UserError(f"{folder}: missing {stem}[.gz] (an IDX folder holds {expected})")


def _read_idx(path: Path, magic: int, ndim: int, digests: dict[str, str]) -> np.ndarray:
    """Parse one IDX file strictly (gzip by name or magic) into a uint8 array view."""
    raw = path.read_bytes()
    digests[path.name] = hashlib.sha256(raw).hexdigest()
    data = raw
    if path.name.endswith(".gz") or raw[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise UserError(f"{path}: not a valid gzip file ({e})") from None
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{path}: truncated IDX file ({len(data)} bytes, the header alone needs {header})")
    got = int.from_bytes(data[:4], "big")
    if got != magic:
        raise UserError(f"{path}: bad IDX magic 0x{got:08x} (expected 0x{magic:08x}); not an IDX file of this kind")
    dims = struct.unpack(f">{ndim}i", data[4:header])
    if dims[0] < 0 or any(d < 1 for d in dims[1:]):
        raise UserError(f"{path}: invalid IDX dimensions {dims}")
    expected = header + math.prod(dims)
    if len(data) < expected:
        raise UserError(
            f"{path}: truncated IDX data: header says shape {dims} ({expected} bytes) but the file has {len(data)}"
        )
    if len(data) > expected:
        raise UserError(f"{path}: {len(data) - expected} unexpected bytes after the IDX data of shape {dims}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _idx_label_names(folder: Path, labels: Sequence[np.ndarray]) -> tuple[list[str], str]:
    """Names from ``label_names.txt`` if present, Fashion-MNIST by folder name, else numbers."""
    numeric = _numeric_names(labels)
    names_file = folder / "label_names.txt"
    if names_file.is_file():
        names = [line.strip() for line in names_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(names) < len(numeric):
            raise UserError(f"{names_file} lists {len(names)} names but the labels go up to {len(numeric) - 1}")
        return names, "label_names.txt"
    if len(numeric) == 10 and "fashion" in folder.resolve().name.lower():
        return list(FASHION_MNIST_NAMES), "fashion-mnist"
    return numeric, "numeric"


@SOURCES.register("idx")
def idx(path: Path | None, *, test_fraction: float, split_seed: int) -> SourceResult:
    """MNIST-style IDX files in a folder; the official train/t10k split (test_fraction unused)."""
    assert path is not None
    if not path.is_dir():
        raise UserError(f"idx source needs a folder of IDX files, {path} is not a directory")
    digests: dict[str, str] = {}
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, (img_stem, lab_stem) in _IDX_FILES.items():
        img_path, lab_path = _find_idx(path, img_stem), _find_idx(path, lab_stem)
        images = _read_idx(img_path, _IDX_IMAGES_MAGIC, 3, digests)
        labels = _read_idx(lab_path, _IDX_LABELS_MAGIC, 1, digests).astype(np.int64)
        if len(images) != len(labels):
            raise UserError(f"{img_path} has {len(images)} images but {lab_path} has {len(labels)} labels")
        arrays[split] = (images[:, None], labels)
    shapes = {a[0].shape[1:] for a in arrays.values()}
    if len(shapes) != 1:
        raise UserError(f"{path}: train and test images differ in size: {sorted(shapes)}")
    names, names_from = _idx_label_names(path, [lab for _, lab in arrays.values()])
    c, h, w = shapes.pop()
    return SourceResult(
        splits={s: SplitData(lab, _array_chunks(img, None)) for s, (img, lab) in arrays.items()},
        image_shape=(c, h, w),
        label_names=names,
        info={
            "format": "idx",
            "path": str(path),
            "split": "official",
            "files_sha256": dict(sorted(digests.items())),
            "label_names_from": names_from,
        },
    )


# --------------------------------------------------------------------------- CIFAR pickles


def _allowed_pickle_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR batch pickle needs: numpy array/dtype reconstruction."""
    import _codecs

    try:
        from numpy._core.multiarray import _reconstruct
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
        from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,  # protocol-5 arrays
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _codecs.encode,  # bytes under protocol 2
    }


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays, lists, dicts and bytes, and refuses any other global.

    A refused global raises before anything it names is called, so a malicious payload never runs.
    """

    def __init__(self, file: io.BufferedIOBase, *, name: str) -> None:
        super().__init__(file, encoding="bytes")
        self._name = name
        self._allowed = _allowed_pickle_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UserError(
                f"{self._name}: refused to load a pickle global '{module}.{name}' "
                "(CIFAR batches only hold numpy arrays, lists and bytes; the file may be malicious)"
            ) from None


def load_restricted_pickle(data: bytes, name: str) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; any failure is a UserError naming ``name``."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), name=name).load()
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure on untrusted bytes is the file's fault
        raise UserError(f"{name}: not a readable CIFAR pickle ({type(e).__name__}: {e})") from None


def _key(d: dict[Any, Any], key: str, name: str) -> Any:
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise UserError(f"{name}: CIFAR pickle has no {key!r} entry (keys: {sorted(map(str, d))[:8]})")


def _cifar_batch(obj: Any, label_key: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 3, 32, 32) uint8, labels int64) from one unpickled batch dict."""
    if not isinstance(obj, dict):
        raise UserError(f"{name}: expected a CIFAR batch dict, got {type(obj).__name__}")
    data = _key(obj, "data", name)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise UserError(f"{name}: 'data' must be a uint8 array of shape (N, 3072), got {desc}")
    try:
        labels = np.asarray(_key(obj, label_key, name), dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise UserError(f"{name}: {label_key!r} is not a list of integers ({e})") from None
    if len(labels) != len(data):
        raise UserError(f"{name}: {len(data)} images but {len(labels)} {label_key}")
    if len(labels) and labels.min() < 0:
        raise UserError(f"{name}: negative label {labels.min()}")
    return np.ascontiguousarray(data).reshape(-1, 3, 32, 32), labels


def _cifar_files(path: Path) -> tuple[dict[str, tuple[str, bytes]], str]:
    """Basename -> (display name, bytes) of the files in a folder or a tar archive."""
    found: dict[str, tuple[str, bytes]] = {}
    wanted = re.compile(r"^(data_batch_\d+|test_batch|batches\.meta|train|test|meta)$")
    if path.is_dir():
        for p in sorted(path.iterdir()):
            if p.is_file() and wanted.match(p.name):
                found[p.name] = (str(p), p.read_bytes())
        return found, "directory"
    with open_tar(path) as tf:
        for m in tar_members(path, tf):
            base = PurePosixPath(m.name).name
            if wanted.match(base):
                if base in found:
                    raise UserError(f"{path}: ambiguous archive, {base} appears more than once")
                found[base] = (f"{path}:{m.name}", tar_read(path, tf, m))
    return found, "tar"


def _names_from_meta(files: dict[str, tuple[str, bytes]], meta: str, key: str) -> list[str] | None:
    if meta not in files:
        return None
    name, data = files[meta]
    obj = load_restricted_pickle(data, name)
    if not isinstance(obj, dict):
        raise UserError(f"{name}: expected a dict, got {type(obj).__name__}")
    raw = _key(obj, key, name)
    if not isinstance(raw, list):
        raise UserError(f"{name}: {key!r} must be a list of names")
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in raw]


@SOURCES.register("cifar")
def cifar(path: Path | None, *, test_fraction: float, split_seed: int) -> SourceResult:
    """CIFAR-10/100 python batches (folder or tar), official train/test split (test_fraction unused)."""
    assert path is not None
    files, container = _cifar_files(path)
    batch_names = sorted((n for n in files if n.startswith("data_batch_")), key=lambda n: int(n.rsplit("_", 1)[1]))
    if batch_names or "test_batch" in files:
        if not batch_names or "test_batch" not in files:
            raise UserError(f"{path}: CIFAR-10 needs data_batch_1..5 and test_batch, found {sorted(files)}")
        kind, label_key = "cifar-10", "labels"
        groups = {"train": batch_names, "test": ["test_batch"]}
        names = _names_from_meta(files, "batches.meta", "label_names")
    elif "train" in files and "test" in files:
        kind, label_key = "cifar-100", "fine_labels"
        groups = {"train": ["train"], "test": ["test"]}
        names = _names_from_meta(files, "meta", "fine_label_names")
    else:
        raise UserError(
            f"{path}: no CIFAR batches found (expected data_batch_1..5, test_batch, batches.meta for "
            "CIFAR-10, or train, test, meta for CIFAR-100)"
        )
    splits: dict[str, SplitData] = {}
    all_labels = []
    for split, members in groups.items():
        batches = [_cifar_batch(load_restricted_pickle(files[m][1], files[m][0]), label_key, files[m][0]) for m in members]
        labels = np.concatenate([lab for _, lab in batches])
        all_labels.append(labels)
        splits[split] = SplitData(labels, iter([img for img, _ in batches]))
    names_from = "meta"
    if names is None:
        names, names_from = _numeric_names(all_labels), "numeric"
    meta = "batches.meta" if kind == "cifar-10" else "meta"
    used = sorted({*(m for members in groups.values() for m in members), *([meta] if meta in files else [])})
    return SourceResult(
        splits=splits,
        image_shape=(3, 32, 32),
        label_names=names,
        info={
            "format": kind,
            "path": str(path),
            "container": container,
            "split": "official",
            "files_sha256": {f: hashlib.sha256(files[f][1]).hexdigest() for f in used},
            "label_names_from": names_from,
        },
    )


# --------------------------------------------------------------------------- image folders


def _options(source: str, given: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(defaults), key=str)
    if unknown:
        raise UserError(f"source {source!r}: unknown option {unknown[0]!r}; valid: {', '.join(sorted(defaults))}")
    return {**defaults, **given}

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_GRAY_MODES = {"1", "L", "LA", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}


class _ImageFiles:
    """The image files of a directory or tar archive, sorted by relative name, read in place.

    Uncompressed tars are read by byte offset (no extraction); compressed tars cannot seek
    cheaply, so their image bytes are read once, in archive order, and kept in memory.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ignored = 0
        self._offsets: list[tuple[int, int]] = []
        self._cached: list[bytes] = []
        names: list[str] = []
        if path.is_dir():
            self.container = "directory"
            for root, dirs, files in os.walk(path):
                dirs.sort()
                rel = Path(root).relative_to(path).parts
                for f in sorted(files):
                    parts = (*rel, f)
                    if visible(parts) and f.lower().endswith(IMAGE_EXTENSIONS):
                        names.append("/".join(parts))
                    else:
                        self.ignored += 1
            names.sort()
        else:
            self.container = "tar"
            with open_tar(path) as tf:
                members = tar_members(path, tf)
                compressed = not isinstance(tf.fileobj, io.BufferedReader)
                for m in members:
                    if not m.name.lower().endswith(IMAGE_EXTENSIONS):
                        self.ignored += 1
                        continue
                    names.append("/".join(PurePosixPath(m.name.lstrip("/")).parts))
                    if compressed:
                        self._cached.append(tar_read(path, tf, m))
                    else:
                        self._offsets.append((m.offset_data, m.size))
        self.names = names

    def display(self, i: int) -> str:
        sep = "/" if self.container == "directory" else ":"
        return f"{self.path}{sep}{self.names[i]}"

    def iter_bytes(self, order: Sequence[int]) -> Iterator[bytes]:
        """Encoded bytes of the files at ``order``, in that order."""
        if self.container == "directory":
            for i in order:
                try:
                    yield (self.path / self.names[i]).read_bytes()
                except OSError as e:
                    raise UserError(f"cannot read {self.display(i)}: {e}") from None
        elif self._cached:
            for i in order:
                yield self._cached[i]
        else:
            with open(self.path, "rb") as f:
                for i in order:
                    offset, size = self._offsets[i]
                    f.seek(offset)
                    data = f.read(size)
                    if len(data) != size:
                        raise UserError(f"{self.display(i)}: truncated archive member ({len(data)} of {size} bytes)")
                    yield data


SPLIT_FOLDERS = ("train", "test")


@dataclass(frozen=True)
class _Layout:
    """How an image folder's relative names map to splits and labels (see ``image_folder``'s docstring)."""

    prefix: str | None  # the wrapper folder skipped, if any
    splits: list[str] | None  # per image: "train" / "test" from split folders, or None (split by test_fraction)
    classes: list[str] | None  # per image: its class folder, or None (flat: unlabeled)


def _folder_layout(path: Path, names: list[str], in_tar: bool) -> _Layout:
    """Read the folder structure of ``names`` (relative, sorted) as (wrapper, split folders, class folders)."""
    parts = [PurePosixPath(n).parts for n in names]
    prefix = None
    tops = {p[0] for p in parts}
    # one common top folder is a wrapper when everything in it sits in folders of its own (wrapper/class/file);
    # in a tar, also when it holds the images flat (tar cf x.tar photos/). In a folder on disk, top/file is one
    # class folder, which is refused below rather than silently read as an unlabeled folder.
    if len(tops) == 1 and all(len(p) >= (2 if in_tar else 3) for p in parts):
        prefix = tops.pop()
        parts = [p[1:] for p in parts]
        tops = {p[0] for p in parts}
    splits = None
    if set(SPLIT_FOLDERS) <= tops:
        extra = sorted(tops - set(SPLIT_FOLDERS))
        if extra or any(len(p) == 1 for p in parts):
            odd = extra[0] if extra else next("/".join(p) for p in parts if len(p) == 1)
            raise UserError(f"{path}: train/ and test/ folders are read as the splits, but {odd!r} lies beside them; "
                            "put every image under train/ or test/")
        splits = [p[0] for p in parts]
        parts = [p[1:] for p in parts]
    flat = [i for i, p in enumerate(parts) if len(p) == 1]
    if len(flat) == len(parts):
        return _Layout(prefix, splits, None)
    if flat:
        nested = next(i for i, p in enumerate(parts) if len(p) > 1)
        raise UserError(
            f"{path}: mixed layout: {names[flat[0]]} lies flat but {names[nested]} is in a class folder; "
            "use either class sub-folders or a flat folder of images"
        )
    classes = [p[0] for p in parts]
    if len(set(classes)) == 1:
        raise UserError(f"{path}: every image is in one class folder, {classes[0]!r}: a labelled dataset needs two "
                        "or more class folders; for unlabeled images, put them directly in the folder (or give "
                        "--path the class folder itself)")
    return _Layout(prefix, splits, classes)


def _decode_chunks(files: _ImageFiles, order: np.ndarray, mode: str, shape: tuple[int, int, int],
                   size: int | None, background: tuple[int, int, int]) -> Iterator[np.ndarray]:
    """Decode the images at ``order`` into uint8 (n, C, H, W) chunks with :func:`normalize_image`."""
    from PIL import Image

    c, h, w = shape
    for start in range(0, len(order), CHUNK):
        idx = order[start : start + CHUNK]
        out = np.empty((len(idx), c, h, w), dtype=np.uint8)
        for j, (i, data) in enumerate(zip(idx, files.iter_bytes(idx), strict=True)):
            try:
                arr = normalize_image(data, mode=mode, size=size, background=background)
            except (*DECODE_ERRORS, Image.DecompressionBombError) as e:
                raise UserError(f"cannot decode image {files.display(i)}: {type(e).__name__}: {e}") from None
            if arr.shape != (c, h, w):
                raise UserError(f"{files.display(i)}: decoded size {arr.shape[2]}x{arr.shape[1]} differs from {w}x{h}")
            out[j] = arr
        yield out


#: ``image_folder``'s options and their defaults (``--option KEY=VALUE``; params.yaml ``options:``).
IMAGE_FOLDER_OPTIONS: dict[str, Any] = {"image_size": None, "background": "white"}


@SOURCES.register("image_folder")
@source_kind("image")
def image_folder(path: Path | None, *, test_fraction: float, split_seed: int, **options: Any) -> SourceResult:
    """PNG/JPEG images in a folder or tar: ``<class>/<file>`` is labelled (class names: the folder names; two or
    more), flat files are unlabeled. ``train/`` and ``test/`` folders side by side are the splits
    (``train/<class>/<file>`` or ``train/<file>``; ``test_fraction`` is then unused).

    One common top folder holding only folders (e.g. ``cifar/test/<class>/...``; in a tar also one holding the
    images flat) is a wrapper and skipped. Options: ``image_size`` (default none: all
    images must share one size; N: each is padded to a square and resized to N x N, keeping its aspect) and
    ``background`` (``white``, the default, or ``black``: what transparent pixels and the padding become).
    Images are decoded by content with :func:`normalize_image`. All-grayscale gives C=1, anything else RGB (C=3).
    Split: stratified (labelled) or seeded random (unlabeled).
    """
    from PIL import Image

    assert path is not None
    opts = _options("image_folder", options, IMAGE_FOLDER_OPTIONS)
    image_size = check_image_size("image_folder", opts["image_size"], optional=True)
    background = check_background("image_folder", opts["background"])
    files = _ImageFiles(path)
    if not files.names:
        raise UserError(f"no images found in {path} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    layout = _folder_layout(path, files.names, files.container == "tar")
    prefix, classes = layout.prefix, layout.classes

    # Header pass: size and mode of every image (no pixel decoding) plus a content digest
    # over (name below the common prefix, bytes), so a folder and its archive digest alike.
    digest = hashlib.sha256()
    skip = len(prefix) + 1 if prefix else 0
    size: tuple[int, int] | None = None
    all_gray = True
    order = np.arange(len(files.names))
    for i, data in zip(order, files.iter_bytes(order), strict=True):
        name = files.names[i][skip:].encode("utf-8")
        digest.update(len(name).to_bytes(8, "big") + name + len(data).to_bytes(8, "big") + data)
        try:
            with Image.open(io.BytesIO(data)) as im:
                im_size, im_mode = im.size, im.mode
        except Exception as e:  # noqa: BLE001
            raise UserError(f"cannot read image {files.display(i)}: {type(e).__name__}: {e}") from None
        if size is None:
            size = im_size
        elif im_size != size and image_size is None:
            raise UserError(
                f"images differ in size: {files.display(0)} is {size[0]}x{size[1]} but "
                f"{files.display(i)} is {im_size[0]}x{im_size[1]}; give the option image_size "
                "(--option image_size=32, or options: {image_size: 32} in params.yaml) to pad every image to a "
                "square and resize it to that size"
            )
        all_gray = all_gray and im_mode in _GRAY_MODES
    assert size is not None
    mode, channels = ("L", 1) if all_gray else ("RGB", 3)
    shape = (channels, size[1], size[0]) if image_size is None else (channels, image_size, image_size)

    if classes is None:
        label_names: list[str] = []
        labels = np.full(len(files.names), UNLABELED, dtype=np.int64)
    else:
        label_names = sorted(set(classes))
        lookup = {c: k for k, c in enumerate(label_names)}
        labels = np.array([lookup[c] for c in classes], dtype=np.int64)
    if layout.splits is None:
        train, test = stratified_split(labels, test_fraction, split_seed)
        split = "random" if classes is None else "stratified"
    else:
        in_test = np.array([s == "test" for s in layout.splits])
        train, test, split = np.flatnonzero(~in_test), np.flatnonzero(in_test), "folders"
    return SourceResult(
        splits={
            "train": SplitData(labels[train], _decode_chunks(files, train, mode, shape, image_size, background)),
            "test": SplitData(labels[test], _decode_chunks(files, test, mode, shape, image_size, background)),
        },
        image_shape=shape,
        label_names=label_names,
        info={
            "format": "image_folder",
            "path": str(path),
            "container": files.container,
            "layout": "flat" if classes is None else "class_folders",
            "prefix": prefix,
            "num_images": len(files.names),
            "ignored_files": files.ignored,
            "color": "grayscale" if all_gray else "rgb",
            "options": {"image_size": image_size, "background": opts["background"]},
            "content_sha256": digest.hexdigest(),
            "split": split,
        },
    )

