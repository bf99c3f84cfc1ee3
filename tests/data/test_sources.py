"""Ingest sources end to end on real files: digits, IDX, CIFAR pickles, image folders."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import shutil
import struct
import tarfile
import uuid
from pathlib import Path

import numpy as np
import pytest
from helpers import SHARED_DATA, needs_shared
from PIL import Image

from ssl_tasks.core.errors import UserError
from ssl_tasks.data.ingest import SOURCES, ingest
from ssl_tasks.data.sources import stratified_split
from ssl_tasks.modalities.image.shards import FORMAT, ImageDataset
from ssl_tasks.modalities.image.sources import FASHION_MNIST_NAMES

FASHION = SHARED_DATA / "fashion_mnist"
CIFAR_JPEG_TAR = SHARED_DATA / "cifar10_jpeg" / "cifar10_test_jpeg.tar"
needs_fashion = needs_shared(FASHION, "shared Fashion-MNIST")
needs_cifar_jpeg = needs_shared(CIFAR_JPEG_TAR, "shared CIFAR-10 JPEG tar")


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- registry / split


def test_registry_lists_sources() -> None:
    assert SOURCES.names() == ["audio_folder", "audio_table", "cifar", "edge_list", "idx", "image_folder",
                              "image_text_table", "image_text_tar", "moving_sprites", "planetoid", "sklearn_digits",
                              "text", "text_table", "video_folder"]
    with pytest.raises(UserError, match="unknown source 'nope'"):
        ingest("nope", None, Path("/nonexistent/out"))


def test_stratified_split_balanced_sorted_disjoint() -> None:
    labels = np.repeat(np.arange(4), [100, 50, 10, 3])
    train, test = stratified_split(labels, 0.2, seed=7)
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    assert np.intersect1d(train, test).size == 0
    assert len(train) + len(test) == len(labels)
    assert np.bincount(labels[test], minlength=4).tolist() == [20, 10, 2, 1]
    again = stratified_split(labels, 0.2, seed=7)
    assert np.array_equal(again[1], test)
    assert not np.array_equal(stratified_split(labels, 0.2, seed=8)[1], test)


def test_unlabeled_split_is_seeded_random() -> None:
    labels = np.full(100, -1)
    train, test = stratified_split(labels, 0.25, seed=0)
    assert len(test) == 25 and len(train) == 75
    assert not np.array_equal(test, np.arange(75, 100))  # shuffled, not a tail cut
    assert np.array_equal(stratified_split(labels, 0.25, seed=0)[1], test)


@pytest.mark.parametrize("tf", [0, 1, -0.1, 1.5, "x"])
def test_bad_test_fraction(tf: object, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="test_fraction"):
        ingest("sklearn_digits", None, tmp_path / "out", test_fraction=tf)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        ingest("idx", tmp_path / "missing", tmp_path / "out")
    with pytest.raises(UserError, match="needs a path"):
        ingest("image_folder", None, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_refuses_to_overwrite_foreign_directory(tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="refusing to overwrite"):
        ingest("sklearn_digits", None, out)
    assert (out / "notes.txt").read_text() == "keep me"


# --------------------------------------------------------------------------- sklearn digits


def test_digits_ingest(tmp_path: Path) -> None:
    out = tmp_path / "digits"
    m = ingest("sklearn_digits", None, out, test_fraction=0.2, split_seed=0, shard_size=500)
    assert m["format"] == FORMAT and m["image_shape"] == [1, 8, 8] and m["dtype"] == "uint8"
    assert m["label_names"] == [str(i) for i in range(10)]
    assert m["source"]["name"] == "sklearn_digits"
    assert m["source"]["test_fraction"] == 0.2 and m["source"]["split_seed"] == 0
    train, test = m["splits"]["train"], m["splits"]["test"]
    assert train["count"] + test["count"] == 1797
    assert len(train["shards"]) == 3  # 1438 samples in shards of 500
    # stratified: every class gives round(20%) of its samples to test
    from sklearn.datasets import load_digits

    per_class = np.bincount(load_digits().target)
    assert test["class_counts"] == [int(np.floor(n * 0.2 + 0.5)) for n in per_class]
    assert [a + b for a, b in zip(train["class_counts"], test["class_counts"], strict=True)] == per_class.tolist()

    ds = ImageDataset(out)
    ds.verify()
    images, labels = ds.load("train")
    assert images.dtype == np.uint8 and images.shape == (train["count"], 1, 8, 8)
    assert images.max() == 255 and images.min() == 0
    assert set(np.unique(images).tolist()) <= {round(v * 255 / 16) for v in range(17)}
    assert labels.dtype == np.int64
    assert not out.with_name("digits.tmp").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["digits"]  # no temp leftovers


def test_digits_ingest_is_byte_identical(tmp_path: Path) -> None:
    a = ingest("sklearn_digits", None, tmp_path / "a", shard_size=300)
    b = ingest("sklearn_digits", None, tmp_path / "b", shard_size=300)
    assert a == b
    fa, fb = all_files(tmp_path / "a"), all_files(tmp_path / "b")
    assert len(fa) == 1 + 2 * (len(a["splits"]["train"]["shards"]) + len(a["splits"]["test"]["shards"]))
    assert fa == fb


def test_different_seed_changes_split(tmp_path: Path) -> None:
    ingest("sklearn_digits", None, tmp_path / "a", split_seed=0)
    ingest("sklearn_digits", None, tmp_path / "b", split_seed=1)
    la = ImageDataset(tmp_path / "a").load("test")[1]
    lb = ImageDataset(tmp_path / "b").load("test")[1]
    assert np.bincount(la).tolist() == np.bincount(lb).tolist()
    assert all_files(tmp_path / "a") != all_files(tmp_path / "b")


# --------------------------------------------------------------------------- IDX


def idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}i", *arr.shape) + arr.astype(np.uint8).tobytes()


def write_idx_folder(folder: Path, *, gz: bool, n_train: int = 30, n_test: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 5, 4), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 3, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 5, 4), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 3, n_test, dtype=np.uint8),
    }
    for name, arr in arrays.items():
        raw = idx_bytes(arr, 0x803 if arr.ndim == 3 else 0x801)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw, mtime=0))
        else:
            (folder / name).write_bytes(raw)
    return arrays


@needs_fashion
def test_fashion_mnist_idx(tmp_path: Path) -> None:
    out = tmp_path / "fmnist"
    m = ingest("idx", FASHION, out)
    assert m["splits"]["train"]["count"] == 60000 and m["splits"]["test"]["count"] == 10000
    assert m["splits"]["train"]["class_counts"] == [6000] * 10
    assert m["splits"]["test"]["class_counts"] == [1000] * 10
    assert m["image_shape"] == [1, 28, 28]
    assert m["label_names"] == FASHION_MNIST_NAMES
    assert m["label_names"][0] == "T-shirt/top" and m["label_names"][9] == "Ankle boot"
    src = m["source"]
    assert src["path"] == str(FASHION) and src["split"] == "official"
    assert src["files_sha256"]["train-images-idx3-ubyte.gz"] == (
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"
    )
    ds = ImageDataset(out)
    ds.verify()
    images, labels = ds.load("test")
    raw = gzip.decompress((FASHION / "t10k-images-idx3-ubyte.gz").read_bytes())
    assert np.array_equal(images.reshape(-1), np.frombuffer(raw, np.uint8, offset=16))
    assert 72 < images.mean() < 74  # README: mean pixel 73.15 in test


@pytest.mark.parametrize("gz", [False, True])
def test_small_idx_folder(tmp_path: Path, gz: bool) -> None:
    arrays = write_idx_folder(tmp_path / "digits_idx", gz=gz)
    m = ingest("idx", tmp_path / "digits_idx", tmp_path / "out", shard_size=7)
    assert m["image_shape"] == [1, 5, 4]
    assert m["label_names"] == ["0", "1", "2"]  # numeric: folder name has no "fashion"
    ds = ImageDataset(tmp_path / "out")
    images, labels = ds.load("train")
    assert np.array_equal(images[:, 0], arrays["train-images-idx3-ubyte"])
    assert np.array_equal(labels, arrays["train-labels-idx1-ubyte"])
    assert len(m["splits"]["train"]["shards"]) == 5  # 30 / 7


def test_idx_label_names_file(tmp_path: Path) -> None:
    write_idx_folder(tmp_path / "x", gz=False)
    (tmp_path / "x" / "label_names.txt").write_text("cat\ndog\nbird\n")
    m = ingest("idx", tmp_path / "x", tmp_path / "out")
    assert m["label_names"] == ["cat", "dog", "bird"]


def corrupt_case(folder: Path, case: str) -> str:
    """Damage one file of a valid gz IDX folder; return the damaged file's name."""
    name = "train-images-idx3-ubyte.gz"
    p = folder / name
    raw = gzip.decompress(p.read_bytes())
    if case == "truncated_data":
        p.write_bytes(gzip.compress(raw[:-37], mtime=0))
    elif case == "truncated_gzip":
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif case == "bad_magic":
        p.write_bytes(gzip.compress(b"\x00\x00\x08\x02" + raw[4:], mtime=0))
    elif case == "garbage_gz":
        p.write_bytes(os.urandom(500))
    elif case == "trailing":
        p.write_bytes(gzip.compress(raw + b"\x00" * 5, mtime=0))
    elif case == "count_mismatch":
        name = "train-labels-idx1-ubyte.gz"
        lab = gzip.decompress((folder / name).read_bytes())
        fewer = struct.pack(">II", 0x801, 29) + lab[8:-1]
        (folder / name).write_bytes(gzip.compress(fewer, mtime=0))
    elif case == "header_only":
        p.write_bytes(gzip.compress(raw[:10], mtime=0))
    return name


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("truncated_data", "truncated IDX data"),
        ("truncated_gzip", "not a valid gzip file"),
        ("bad_magic", "bad IDX magic 0x00000802"),
        ("garbage_gz", "not a valid gzip file"),
        ("trailing", "unexpected bytes"),
        ("count_mismatch", "30 images but .* 29 labels"),
        ("header_only", "truncated IDX file"),
    ],
)
def test_corrupt_idx_raises_user_error(tmp_path: Path, case: str, message: str) -> None:
    write_idx_folder(tmp_path / "in", gz=True)
    bad = corrupt_case(tmp_path / "in", case)
    out = tmp_path / "out"
    with pytest.raises(UserError, match=message) as e:
        ingest("idx", tmp_path / "in", out)
    assert bad in str(e.value)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


@needs_fashion
def test_truncated_copy_of_real_fashion_file(tmp_path: Path) -> None:
    folder = tmp_path / "fashion"
    folder.mkdir()
    for p in FASHION.glob("*.gz"):
        (folder / p.name).symlink_to(p)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    data = (FASHION / "t10k-labels-idx1-ubyte.gz").read_bytes()
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(data[: len(data) - 100])
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.gz: not a valid gzip file"):
        ingest("idx", folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_idx_missing_file(tmp_path: Path) -> None:
    write_idx_folder(tmp_path / "in", gz=False)
    (tmp_path / "in" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError, match=r"missing t10k-labels-idx1-ubyte\[.gz\]"):
        ingest("idx", tmp_path / "in", tmp_path / "out")


# --------------------------------------------------------------------------- CIFAR pickles

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(folder: Path, n_per_batch: int = 20, n_batches: int = 2) -> dict[str, np.ndarray]:
    """Small CIFAR-10 batches in the original format: bytes keys, uint8 (N, 3072), list labels."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    names = [f"data_batch_{i + 1}" for i in range(n_batches)] + ["test_batch"]
    for name in names:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n_per_batch).tolist()
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data, b"filenames": [b"x.png"] * n_per_batch}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        arrays[name] = data
        arrays[name + ".labels"] = np.array(labels)
    with open(folder / "batches.meta", "wb") as f:
        meta = {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_cases_per_batch": n_per_batch, b"num_vis": 3072}
        pickle.dump(meta, f, protocol=2)
    return arrays


def test_cifar10_folder(tmp_path: Path) -> None:
    arrays = write_cifar10(tmp_path / "cifar-10-batches-py")
    m = ingest("cifar", tmp_path / "cifar-10-batches-py", tmp_path / "out")
    assert m["image_shape"] == [3, 32, 32]
    assert m["label_names"] == CIFAR10_NAMES
    assert m["splits"]["train"]["count"] == 40 and m["splits"]["test"]["count"] == 20
    assert m["source"]["format"] == "cifar-10"
    ds = ImageDataset(tmp_path / "out")
    ds.verify()
    images, labels = ds.load("train")
    expected = np.concatenate([arrays["data_batch_1"], arrays["data_batch_2"]]).reshape(-1, 3, 32, 32)
    assert np.array_equal(images, expected)
    assert np.array_equal(labels, np.concatenate([arrays["data_batch_1.labels"], arrays["data_batch_2.labels"]]))


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_cifar_python3_pickles(tmp_path: Path, protocol: int) -> None:
    folder = tmp_path / "c"
    write_cifar10(folder, n_batches=1)
    for name in ("data_batch_1", "test_batch"):
        with open(folder / name, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=protocol)
    m = ingest("cifar", folder, tmp_path / "out")
    assert m["splits"]["train"]["count"] == 20


def test_cifar100_tar_gz(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    src = tmp_path / "cifar-100-python"
    src.mkdir()
    for name, n in (("train", 30), ("test", 10)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": [i % 5 for i in range(n)],
                 b"coarse_labels": [0] * n}  # fmt: skip
        (src / name).write_bytes(pickle.dumps(batch, protocol=2))
    fine = [f"c{i}".encode() for i in range(100)]
    (src / "meta").write_bytes(pickle.dumps({b"fine_label_names": fine, b"coarse_label_names": [b"x"]}, protocol=2))
    archive = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src, arcname="cifar-100-python")
    m = ingest("cifar", archive, tmp_path / "out")
    assert m["source"]["format"] == "cifar-100" and m["source"]["container"] == "tar"
    assert len(m["label_names"]) == 100 and m["label_names"][3] == "c3"
    assert m["splits"]["train"]["class_counts"][:5] == [6] * 5


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("where", ["top", "nested", "meta"])
def test_malicious_pickle_is_refused(tmp_path: Path, where: str) -> None:
    folder = tmp_path / "cifar"
    write_cifar10(folder, n_batches=1)
    marker = tmp_path / f"pwned_{uuid.uuid4().hex}"
    evil = _Evil(marker)
    if where == "top":
        payload = evil
        target = "data_batch_1"
    elif where == "nested":
        payload = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, evil]}
        target = "test_batch"
    else:
        payload = {b"label_names": [evil]}
        target = "batches.meta"
    (folder / target).write_bytes(pickle.dumps(payload, protocol=2))
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"refused to load a pickle global '(posix|os)\.system'") as e:
        ingest("cifar", folder, out)
    assert target in str(e.value)
    assert not marker.exists()
    assert not out.exists()


def test_garbage_cifar_pickle(tmp_path: Path) -> None:
    folder = tmp_path / "cifar"
    write_cifar10(folder, n_batches=1)
    (folder / "test_batch").write_bytes(b"\x80\x02garbage")
    with pytest.raises(UserError, match="test_batch: not a readable CIFAR pickle"):
        ingest("cifar", folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cifar_wrong_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no CIFAR batches found"):
        ingest("cifar", tmp_path / "empty", tmp_path / "out")


# --------------------------------------------------------------------------- image folders


@needs_cifar_jpeg
def test_cifar10_jpeg_tar(tmp_path: Path) -> None:
    out = tmp_path / "cifar_jpeg"
    m = ingest("image_folder", CIFAR_JPEG_TAR, out, test_fraction=0.2, split_seed=0, shard_size=3000)
    assert m["label_names"] == CIFAR10_NAMES
    assert m["image_shape"] == [3, 32, 32]
    assert m["splits"]["train"]["count"] == 8000 and m["splits"]["test"]["count"] == 2000
    assert m["splits"]["train"]["class_counts"] == [800] * 10
    assert [s["count"] for s in m["splits"]["train"]["shards"]] == [3000, 3000, 2000]
    assert m["source"]["prefix"] == "test" and m["source"]["layout"] == "class_folders"
    ds = ImageDataset(out)
    ds.verify()
    # The k-th training sample is the k-th training member in sorted order, decoded by Pillow.
    labels = np.repeat(np.arange(10), 1000)
    train_idx, _ = stratified_split(labels, 0.2, 0)
    images, train_labels = ds.load("train")
    with tarfile.open(CIFAR_JPEG_TAR) as tf:
        names = sorted(m.name for m in tf.getmembers() if m.isfile())
        for k in (0, 4321, 7999):
            data = tf.extractfile(names[train_idx[k]]).read()  # type: ignore[union-attr]
            expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).transpose(2, 0, 1)
            assert np.array_equal(images[k], expected)
            assert CIFAR10_NAMES[train_labels[k]] in names[train_idx[k]]


def make_pngs(folder: Path, classes: dict[str, int] | None, *, mode: str = "RGB", size: tuple[int, int] = (6, 5)) -> None:
    """PNGs under class folders ``{class: count}``, or 7 flat ones when ``classes`` is None."""
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    items = [(folder / c, n) for c, n in classes.items()] if classes else [(folder, 7)]
    for d, n in items:
        d.mkdir(exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(d / f"img{i:03d}.png")


def test_png_class_folders(tmp_path: Path) -> None:
    make_pngs(tmp_path / "pngs", {"zebra": 10, "ant": 5})
    (tmp_path / "pngs" / "README.txt").write_text("not an image")
    m = ingest("image_folder", tmp_path / "pngs", tmp_path / "out", test_fraction=0.2)
    assert m["label_names"] == ["ant", "zebra"]
    assert m["image_shape"] == [3, 5, 6]
    assert m["splits"]["test"]["class_counts"] == [1, 2]
    assert m["source"]["ignored_files"] == 1 and m["source"]["prefix"] is None
    ds = ImageDataset(tmp_path / "out")
    images = np.concatenate([ds.load("train")[0], ds.load("test")[0]])
    labels = np.concatenate([ds.load("train")[1], ds.load("test")[1]])
    first_ant = np.asarray(Image.open(tmp_path / "pngs" / "ant" / "img000.png")).transpose(2, 0, 1)
    matches = [k for k, img in enumerate(images) if np.array_equal(img, first_ant)]
    assert len(matches) == 1 and labels[matches[0]] == 0


def test_png_grayscale_and_tar_gz_match_folder(tmp_path: Path) -> None:
    make_pngs(tmp_path / "gray" / "a", None, mode="L")
    make_pngs(tmp_path / "gray" / "b", None, mode="L")
    m = ingest("image_folder", tmp_path / "gray", tmp_path / "out_dir", test_fraction=0.3)
    assert m["image_shape"] == [1, 5, 6] and m["source"]["color"] == "grayscale"
    archive = tmp_path / "gray.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "gray", arcname="top")  # one common prefix folder inside the archive
    m2 = ingest("image_folder", archive, tmp_path / "out_tar", test_fraction=0.3)
    assert m2["source"]["prefix"] == "top" and m2["source"]["container"] == "tar"
    assert m2["source"]["content_sha256"] == m["source"]["content_sha256"]
    a, b = all_files(tmp_path / "out_dir"), all_files(tmp_path / "out_tar")
    a.pop("manifest.json"), b.pop("manifest.json")
    assert a == b  # same pixels and labels, shard for shard


def test_png_flat_is_unlabeled(tmp_path: Path) -> None:
    make_pngs(tmp_path / "flat", None)
    m = ingest("image_folder", tmp_path / "flat", tmp_path / "out", test_fraction=0.3)
    assert m["label_names"] == [] and m["source"]["layout"] == "flat"
    assert m["splits"]["train"]["count"] + m["splits"]["test"]["count"] == 7
    assert m["splits"]["train"]["labeled"] == 0 and m["splits"]["train"]["class_counts"] == []
    _, labels = ImageDataset(tmp_path / "out").load("train")
    assert np.all(labels == -1)


def test_train_and_test_folders_are_the_split(tmp_path: Path) -> None:
    """``train/{cat,dog}`` + ``test/{cat,dog}``: the folders are the split and cat/dog the classes (they were read as
    the classes ``train``/``test``; issue 25, item 5); a wrapper folder above them is skipped, in a tar too."""
    make_pngs(tmp_path / "tt" / "train", {"cat": 4, "dog": 3})
    make_pngs(tmp_path / "tt" / "test", {"cat": 2, "dog": 1})
    m = ingest("image_folder", tmp_path / "tt", tmp_path / "out", test_fraction=0.5)
    assert m["label_names"] == ["cat", "dog"] and m["source"]["split"] == "folders"
    assert m["splits"]["train"]["class_counts"] == [4, 3] and m["splits"]["test"]["class_counts"] == [2, 1]
    first_test_cat = np.asarray(Image.open(tmp_path / "tt" / "test" / "cat" / "img000.png")).transpose(2, 0, 1)
    images, labels = ImageDataset(tmp_path / "out").load("test")
    assert any(np.array_equal(img, first_test_cat) and lab == 0 for img, lab in zip(images, labels))
    archive = tmp_path / "tt.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(tmp_path / "tt", arcname="wrapper")
    m2 = ingest("image_folder", archive, tmp_path / "out_tar")
    assert m2["label_names"] == ["cat", "dog"] and m2["splits"]["test"]["class_counts"] == [2, 1]
    make_pngs(tmp_path / "tt" / "val", {"cat": 1})
    with pytest.raises(UserError, match="'val' lies beside them"):
        ingest("image_folder", tmp_path / "tt", tmp_path / "out2")


def test_one_class_folder_is_refused_not_read_as_unlabeled(tmp_path: Path) -> None:
    make_pngs(tmp_path / "one", {"cat": 4})
    with pytest.raises(UserError, match="every image is in one class folder, 'cat'"):
        ingest("image_folder", tmp_path / "one", tmp_path / "out")
    archive = tmp_path / "flat.tar"  # a tar of a flat folder keeps its folder: a wrapper, unlabeled
    make_pngs(tmp_path / "photos", None)
    with tarfile.open(archive, "w") as tf:
        tf.add(tmp_path / "photos", arcname="photos")
    assert ingest("image_folder", archive, tmp_path / "out_tar")["source"]["layout"] == "flat"


def test_absolute_tar_member_is_refused(tmp_path: Path) -> None:
    make_pngs(tmp_path / "imgs", {"a": 3, "b": 3})
    archive = tmp_path / "abs.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(tmp_path / "imgs", arcname="imgs")
        info = tarfile.TarInfo("/abs/x.png")  # stripped of its "/", it made a class 'abs'
        data = (tmp_path / "imgs" / "a" / "img000.png").read_bytes()
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with pytest.raises(UserError, match="'/abs/x.png' has an absolute path"):
        ingest("image_folder", archive, tmp_path / "out")


def test_mixed_color_converts_to_rgb(tmp_path: Path) -> None:
    make_pngs(tmp_path / "mix" / "g", None, mode="L")
    make_pngs(tmp_path / "mix" / "c", None, mode="RGB")
    m = ingest("image_folder", tmp_path / "mix", tmp_path / "out")
    assert m["image_shape"] == [3, 5, 6]


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="no images found in"):
        ingest("image_folder", tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_corrupt_image_named(tmp_path: Path) -> None:
    make_pngs(tmp_path / "imgs", {"a": 4, "b": 4})
    (tmp_path / "imgs" / "b" / "x.png").write_bytes(os.urandom(300))
    with pytest.raises(UserError, match=r"x\.png"):
        ingest("image_folder", tmp_path / "imgs", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]


def test_truncated_image_during_decode_leaves_nothing(tmp_path: Path) -> None:
    make_pngs(tmp_path / "imgs", {"a": 4, "b": 4})
    p = tmp_path / "imgs" / "a" / "img002.png"
    p.write_bytes(p.read_bytes()[:60])  # header parses, pixel data is cut
    with pytest.raises(UserError, match=r"img002\.png"):
        ingest("image_folder", tmp_path / "imgs", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]


def test_sizes_must_match(tmp_path: Path) -> None:
    make_pngs(tmp_path / "imgs", {"a": 3})
    make_pngs(tmp_path / "imgs" / "b", None, size=(7, 7))
    with pytest.raises(UserError, match="differ in size"):
        ingest("image_folder", tmp_path / "imgs", tmp_path / "out")


def test_mixed_layout_rejected(tmp_path: Path) -> None:
    make_pngs(tmp_path / "imgs", {"a": 3, "b": 3})
    shutil.copy(tmp_path / "imgs" / "a" / "img000.png", tmp_path / "imgs" / "loose.png")
    with pytest.raises(UserError, match="mixed layout"):
        ingest("image_folder", tmp_path / "imgs", tmp_path / "out")


def test_not_a_tar(tmp_path: Path) -> None:
    (tmp_path / "f.tar").write_bytes(os.urandom(2000))
    with pytest.raises(UserError, match="neither a directory nor a readable tar"):
        ingest("image_folder", tmp_path / "f.tar", tmp_path / "out")


def test_root_files_strict_refuses_what_lenient_skips(tmp_path: Path) -> None:
    """The folder-or-tar reader shared by the video (strict) and speech (lenient) sources: a symlink leading out
    of the root is refused or skipped, a tar member with '..' refuses the archive or is skipped (hidden, as
    ``tar_members`` takes it); messages name the kind of root."""
    from ssl_tasks.data.sources import RootFiles

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "cls" / ".hidden").mkdir(parents=True)
    outside.mkdir()
    (outside / "x.wav").write_bytes(b"out")
    for rel in ("cls/a.wav", "cls/b.txt", "cls/.c.wav", "cls/.hidden/d.wav"):
        (root / rel).write_bytes(b"in")
    (root / "cls" / "alias.wav").symlink_to(root / "cls" / "a.wav")
    (root / "cls" / "link.wav").symlink_to(outside / "x.wav")
    lenient = RootFiles(root, "audio", (".wav",), strict=False)
    assert lenient.list() == ["cls/a.wav", "cls/alias.wav"] and lenient.container == "directory"
    assert lenient.read("cls/a.wav") == b"in" and lenient.where("cls/a.wav") == str(root / "cls" / "a.wav")
    with pytest.raises(UserError, match="outside the video root"):
        RootFiles(root, "video", (".wav",), strict=True).list()
    with pytest.raises(UserError, match="leaves the audio root"):
        lenient.resolve("../outside/x.wav", "t.csv:2")
    with pytest.raises(UserError, match="does not exist"):
        RootFiles(tmp_path / "missing", "video", (".mp4",), strict=True)

    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tf:
        for name in ("cls/a.wav", "../up.wav"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tf.addfile(info, io.BytesIO(b"ok"))
    files = RootFiles(archive, "audio", (".wav",), strict=False)
    assert files.list() == ["cls/a.wav"] and files.read("cls/a.wav") == b"ok"
    assert files.container == "tar" and files.resolve("./cls/a.wav", "t") == "cls/a.wav"
    with pytest.raises(UserError, match=r"'\.\./up\.wav' leaves the archive's root"):
        RootFiles(archive, "video", (".wav",), strict=True)
