"""The shard reader: memory-mapped shards and ``stream_epoch`` sharding across ranks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ssl_tasks.core.errors import UserError
from ssl_tasks.modalities.image.shards import ImageDataset, SplitData, stream_epoch, write_dataset

N = 1000


def ids(batch: np.ndarray) -> np.ndarray:
    """Recover each sample's id from its pixels (see ``dataset``)."""
    return batch.reshape(len(batch), -1)[:, :2].astype(np.int64) @ np.array([256, 1])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> ImageDataset:
    """N unique images whose first two pixels encode the sample id, in uneven shards of 97."""
    root = tmp_path_factory.mktemp("ds") / "ds"
    i = np.arange(N)
    images = np.zeros((N, 1, 2, 2), dtype=np.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = i // 256, i % 256
    labels = (i % 3).astype(np.int64)
    write_dataset(
        root,
        {"train": SplitData(labels, iter([images[:500], images[500:]]))},
        image_shape=(1, 2, 2),
        label_names=["a", "b", "c"],
        source={"name": "synthetic"},
        shard_size=97,
    )
    return ImageDataset(root)


def epoch(ds: ImageDataset, **kw: int) -> list[np.ndarray]:
    args = {"batch_size": 16, "seed": 0, "epoch": 0, "rank": 0, "world_size": 1} | kw
    return [ids(b) for b in stream_epoch(ds, "train", **args)]


def test_shards_are_memmaps(dataset: ImageDataset) -> None:
    shards = dataset.shards("train")
    assert len(shards) == 11  # ceil(1000 / 97)
    for images, labels in shards:
        assert isinstance(images, np.memmap) and isinstance(labels, np.memmap)
        assert images.dtype == np.uint8 and labels.dtype == np.int64
    dataset.verify()


def test_single_rank_epoch_is_a_permutation(dataset: ImageDataset) -> None:
    batches = epoch(dataset)
    assert len(batches) == N // 16 and all(len(b) == 16 for b in batches)
    seen = np.concatenate(batches)
    assert len(np.unique(seen)) == len(seen)
    assert not np.array_equal(seen, np.sort(seen))  # shuffled


def test_two_ranks_disjoint_same_count(dataset: ImageDataset) -> None:
    r0 = epoch(dataset, rank=0, world_size=2, seed=5, epoch=3)
    r1 = epoch(dataset, rank=1, world_size=2, seed=5, epoch=3)
    assert len(r0) == len(r1) == N // (16 * 2)
    assert all(len(b) == 16 for b in r0 + r1)
    a, b = np.concatenate(r0), np.concatenate(r1)
    assert len(np.unique(a)) == len(a) and len(np.unique(b)) == len(b)
    assert np.intersect1d(a, b).size == 0


def test_deterministic_per_seed_and_epoch(dataset: ImageDataset) -> None:
    first = np.concatenate(epoch(dataset, seed=1, epoch=0))
    assert np.array_equal(first, np.concatenate(epoch(dataset, seed=1, epoch=0)))
    assert not np.array_equal(first, np.concatenate(epoch(dataset, seed=1, epoch=1)))
    assert not np.array_equal(first, np.concatenate(epoch(dataset, seed=2, epoch=0)))


def test_too_few_samples(dataset: ImageDataset) -> None:
    with pytest.raises(UserError, match="too few"):
        next(stream_epoch(dataset, "train", batch_size=600, seed=0, epoch=0, world_size=2))


def test_unknown_split(dataset: ImageDataset) -> None:
    with pytest.raises(UserError, match="no split 'val'"):
        dataset.count("val")


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no manifest.json"):
        ImageDataset(tmp_path)


def test_save_columns_writes_each_column_and_record_list(tmp_path: Path) -> None:
    """The one shard-writing helper of the video, speech and graph writers: .npy per array (C order, even from a
    transposed view), canonical JSON per record list, paths relative to the root; an empty stem names the key."""
    import json

    from ssl_tasks.data.shards import save_columns

    (tmp_path / "train").mkdir()
    a = np.arange(6, dtype=np.int64).reshape(2, 3).T  # Fortran-ordered view: stored C-ordered all the same
    files = save_columns(tmp_path, "train/shard-00000", {"x": a, "y": np.array([1, -1])}, {"rows": [{"b": 1, "a": 2}]})
    assert files == {"x": "train/shard-00000.x.npy", "y": "train/shard-00000.y.npy",
                     "rows": "train/shard-00000.rows.json"}
    got = np.load(tmp_path / files["x"], allow_pickle=False)
    assert got.flags.c_contiguous and not np.isfortran(got) and (got == a).all()
    assert json.loads((tmp_path / files["rows"]).read_text()) == [{"a": 2, "b": 1}]
    assert save_columns(tmp_path, "", {"features": np.zeros(2)}) == {"features": "features.npy"}
    assert (tmp_path / "features.npy").is_file()
