"""Per-sample and per-class tables of an ingested image dataset (numpy/pandas only) and its GX suite.

The tables are what the expectation suite (:func:`image_suite`, run by :mod:`ssl_tasks.validation.gx_suite`)
checks. Shards are streamed one memory-mapped batch at a time and every statistic is computed vectorised per
batch, so memory stays flat and Fashion-MNIST (70,000 rows) takes about a second.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from ssl_tasks.core.errors import UserError
from ssl_tasks.modalities.image.shards import ImageDataset
from ssl_tasks.validation.gx_suite import (
    SAMPLES,
    Check,
    ValidationConfig,
    fmt,
    label_and_duplicate_checks,
    row_count_check,
)
from ssl_tasks.validation.tables import TRAIN_SPLIT, DatasetTables, class_counts_table

# Float elements held at once per batch (float32: 16 MiB), whatever the image size.
_BATCH_ELEMENTS = 1 << 22
_MAX_BATCH = 4096

SAMPLE_COLUMNS = ["id", "split", "label", "shape", "dtype", "min", "max", "n_nonfinite", "sha1", "in_train"]


def _shape_str(shape: tuple[int, ...]) -> str:
    return "x".join(str(int(s)) for s in shape)


def _batch_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """min, max (NaN ignored), count of non-finite values, and sha1 per image of one batch."""
    n = len(images)
    flat = np.ascontiguousarray(images).reshape(n, -1)
    sha1 = [hashlib.sha1(row.data).hexdigest() for row in flat]
    if flat.shape[1] == 0:
        nan = np.full(n, np.nan)
        return nan, nan, np.zeros(n, dtype=np.int64), sha1
    if flat.dtype.kind == "f":
        xf = flat
    elif flat.dtype.kind in "biu":
        xf = flat.astype(np.float32)  # exact for uint8/int16; the non-finite count is then 0
    else:  # strings, objects, complex: no meaningful range, every value counts as non-finite
        nan = np.full(n, np.nan)
        return nan, nan, np.full(n, flat.shape[1], dtype=np.int64), sha1
    n_nonfinite = np.count_nonzero(~np.isfinite(xf), axis=1).astype(np.int64)
    # fmin/fmax skip NaN (a row of only NaN gives NaN, which the suite treats as missing).
    vmin = np.fmin.reduce(xf, axis=1).astype(np.float64)
    vmax = np.fmax.reduce(xf, axis=1).astype(np.float64)
    return vmin, vmax, n_nonfinite, sha1


def build_tables(data_dir: Path) -> DatasetTables:
    """Stream every shard of ``data_dir`` into the per-sample and per-class tables."""
    ds = ImageDataset(data_dir)
    parts: list[pd.DataFrame] = []
    for split in ds.splits():
        parts.append(image_split_table(ds, split))
    samples = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=SAMPLE_COLUMNS)

    train_mask = (samples["split"] == TRAIN_SPLIT).to_numpy()
    if train_mask.any():
        train_hashes = pd.Index(samples.loc[train_mask, "sha1"].unique())
        in_train = samples["sha1"].isin(train_hashes).to_numpy() & ~train_mask
    else:
        in_train = np.zeros(len(samples), dtype=bool)
    samples["in_train"] = in_train
    return DatasetTables(samples=samples, class_counts=class_counts_table(ds, samples), manifest=ds.manifest)


def image_split_table(ds: ImageDataset, split: str) -> pd.DataFrame:
    try:
        shards = ds.shards(split)
    except (OSError, ValueError) as e:
        raise UserError(f"dataset {ds.root}: cannot read a shard of split {split!r}: {e}") from None
    total = sum(len(images) for images, _ in shards)
    width = max(6, len(str(max(total - 1, 0))))
    cols: dict[str, list] = {k: [] for k in ("label", "shape", "dtype", "min", "max", "n_nonfinite", "sha1")}
    for k, (images, labels) in enumerate(shards):
        if images.ndim < 1 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(
                f"dataset {ds.root}: split {split!r} shard {k}: images {tuple(images.shape)} and "
                f"labels {tuple(labels.shape)} do not line up (one label per image expected)"
            )
        n_shard = len(images)
        shape, dtype = _shape_str(images.shape[1:]), str(images.dtype)
        per_image = max(1, int(np.prod(images.shape[1:], dtype=np.int64)))
        bs = max(1, min(_MAX_BATCH, _BATCH_ELEMENTS // per_image))
        for i in range(0, n_shard, bs):
            batch = np.asarray(images[i : i + bs])
            vmin, vmax, nonfinite, sha1 = _batch_stats(batch)
            cols["min"].append(vmin)
            cols["max"].append(vmax)
            cols["n_nonfinite"].append(nonfinite)
            cols["sha1"].extend(sha1)
        lab = np.asarray(labels)
        cols["label"].append(lab if lab.dtype.kind in "iu" else lab.astype(np.float64))
        cols["shape"].extend([shape] * n_shard)
        cols["dtype"].extend([dtype] * n_shard)

    def cat(key: str, dtype: type) -> np.ndarray:
        return np.concatenate(cols[key]) if cols[key] else np.zeros(0, dtype=dtype)

    label = cat("label", np.int64)
    if label.dtype.kind in "iu":
        label = label.astype(np.int64)
    return pd.DataFrame(
        {
            "id": [f"{split}/{i:0{width}d}" for i in range(total)],
            "split": [split] * total,
            "label": label,
            "shape": cols["shape"],
            "dtype": cols["dtype"],
            "min": cat("min", np.float64),
            "max": cat("max", np.float64),
            "n_nonfinite": cat("n_nonfinite", np.int64),
            "sha1": cols["sha1"],
        }
    )


def image_suite(tables: DatasetTables, config: ValidationConfig) -> list[Check]:
    """The image suite: shape, dtype and value range of every image, then the shared checks."""
    return image_table_checks(tables) + label_and_duplicate_checks(tables, config, "image")


def image_table_checks(tables: DatasetTables) -> list[Check]:
    """Row count, shape, dtype and value range of every image (image and image–caption datasets)."""
    import great_expectations.expectations as gxe

    m = tables.manifest
    shape = "x".join(str(int(s)) for s in m["image_shape"])
    lo, hi = (float(v) for v in m.get("value_range", [0, 255]))
    checks = [
        row_count_check(tables),
        Check(SAMPLES, "shape", f"shape in {{{shape}}}",
               gxe.ExpectColumnValuesToBeInSet(column="shape", value_set=[shape])),
        Check(SAMPLES, "dtype", "dtype in {uint8}",
               gxe.ExpectColumnValuesToBeInSet(column="dtype", value_set=["uint8"])),
        Check(SAMPLES, "min", f"min >= {fmt(lo)}", gxe.ExpectColumnValuesToBeBetween(column="min", min_value=lo)),
        Check(SAMPLES, "max", f"max <= {fmt(hi)}", gxe.ExpectColumnValuesToBeBetween(column="max", max_value=hi)),
        Check(
            SAMPLES,
            "n_nonfinite",
            "n_nonfinite == 0",
            gxe.ExpectColumnValuesToBeBetween(column="n_nonfinite", min_value=0, max_value=0),
        ),
    ]
    return checks


__all__ = ["SAMPLE_COLUMNS", "build_tables", "image_split_table", "image_suite", "image_table_checks"]
