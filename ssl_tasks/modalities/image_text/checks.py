"""Per-image, per-caption and per-class tables of an ingested image–caption dataset (numpy/pandas only, no GX).

The image–caption counterpart of :mod:`ssl_tasks.modalities.image.checks`:

* ``samples``: one row per image. The image statistics of the image suite (shape, dtype, min, max,
  n_nonfinite, pixel sha1) plus the pair record: ``image`` (stored path), ``error``, ``n_captions``,
  ``sha256`` (of the source image bytes) and ``in_train`` (a non-train image whose source bytes
  also occur in train). ``id`` is ``<split>/<index>:<image path>``, so every failure names the file.
* ``captions``: one row per caption: ``id`` (``<image id>#<caption index>``), ``split``, ``n_chars``,
  ``blank``, ``decode_error``, ``pair_key`` (sha256 of the image sha256 and the caption; null when
  the image bytes are unknown) and ``pair_in_train`` (a non-train caption whose (image, caption)
  pair also occurs in train).
* ``class_counts``: as for images.

Shards are read one at a time; the 1,422-image Open Clip Art set takes well under a second.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ssl_tasks.core.errors import UserError
from ssl_tasks.modalities.image.checks import SAMPLE_COLUMNS, image_split_table, image_table_checks
from ssl_tasks.modalities.image_text.shards import UNSAFE_PATH, PairDataset
from ssl_tasks.validation.gx_suite import (
    SAMPLES,
    Check,
    ValidationConfig,
    duplicate_check,
    label_and_duplicate_checks,
    row_count_check,
    string_checks,
)
from ssl_tasks.validation.tables import TRAIN_SPLIT, DatasetTables, class_counts_table

REPLACEMENT = "\ufffd"  # what ingest decodes undecodable bytes to
PAIR_SAMPLE_COLUMNS = [*SAMPLE_COLUMNS[:-1], "image", "error", "n_captions", "sha256", "in_train"]
CAPTIONS = "captions"  # the captions table's name in the suite
CAPTION_COLUMNS = ["id", "split", "image_id", "n_chars", "blank", "decode_error", "pair_key", "pair_in_train"]


@dataclass(frozen=True)
class PairTables(DatasetTables):
    captions: pd.DataFrame  # one row per caption, columns CAPTION_COLUMNS

    def extra_frames(self) -> dict[str, pd.DataFrame]:
        return {CAPTIONS: self.captions}

    def report_fields(self, splits: list[str]) -> tuple[dict, dict]:
        c = self.captions
        return ({"n_captions": {split: int((c["split"] == split).sum()) for split in splits}},
                {"n_captions": len(c), "cross_split_duplicate_pairs": int(c["pair_in_train"].sum())})


def _pair_key(sha256: str | None, caption: str) -> str | None:
    if sha256 is None:
        return None
    return hashlib.sha256(f"{sha256}\n{caption}".encode("utf-8", errors="surrogatepass")).hexdigest()


def _split_tables(ds: PairDataset, split: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(samples, captions) rows of one split."""
    samples = image_split_table(ds, split)
    records = ds.records(split)
    if len(records) != len(samples):
        raise UserError(f"dataset {ds.root}: split {split!r} has {len(samples)} images but {len(records)} pair records")
    samples["id"] = [f"{i}:{r.image}" for i, r in zip(samples["id"], records, strict=True)]
    samples["image"] = [r.image for r in records]
    samples["error"] = pd.Series([r.error for r in records], dtype=object)
    samples["n_captions"] = np.array([len(r.captions) for r in records], dtype=np.int64)
    samples["sha256"] = pd.Series([r.sha256 for r in records], dtype=object)
    rows = [(f"{image_id}#{j}", image_id, c, r.sha256)
            for image_id, r in zip(samples["id"], records, strict=True) for j, c in enumerate(r.captions)]
    captions = pd.DataFrame(
        {
            "id": [row[0] for row in rows],
            "split": [split] * len(rows),
            "image_id": [row[1] for row in rows],
            "n_chars": np.array([len(row[2]) for row in rows], dtype=np.int64),
            "blank": np.array([not row[2].strip() for row in rows], dtype=bool),
            "decode_error": np.array([REPLACEMENT in row[2] for row in rows], dtype=bool),
            "pair_key": pd.Series([_pair_key(row[3], row[2]) for row in rows], dtype=object),
        }
    )
    return samples, captions


def _in_train(frame: pd.DataFrame, key: str) -> np.ndarray:
    """Non-train rows whose non-null ``key`` also occurs in train."""
    train = (frame["split"] == TRAIN_SPLIT).to_numpy(dtype=bool)
    train_keys = pd.Index(frame.loc[train, key].dropna().unique())
    return frame[key].isin(train_keys).to_numpy(dtype=bool) & frame[key].notna().to_numpy(dtype=bool) & ~train


def build_pair_tables(ds: PairDataset) -> PairTables:
    """Read every shard of ``ds`` into the per-image, per-caption and per-class tables."""
    parts = [_split_tables(ds, split) for split in ds.splits()]
    if parts:
        samples = pd.concat([s for s, _ in parts], ignore_index=True)
        captions = pd.concat([c for _, c in parts], ignore_index=True)
    else:
        samples = pd.DataFrame(columns=PAIR_SAMPLE_COLUMNS[:-1])
        captions = pd.DataFrame(columns=CAPTION_COLUMNS[:-1])
    samples["in_train"] = _in_train(samples, "sha256")
    captions["pair_in_train"] = _in_train(captions, "pair_key")
    return PairTables(
        samples=samples, class_counts=class_counts_table(ds, samples), manifest=ds.manifest, captions=captions
    )


__all__ = ["CAPTION_COLUMNS", "CAPTIONS", "PAIR_SAMPLE_COLUMNS", "PairTables", "build_pair_tables", "pair_suite"]


def pair_suite(tables: PairTables, config: ValidationConfig) -> list[Check]:
    """The image–caption suite: the image checks, the pair records, every caption, then the shared checks.

    Rows ingest could not use (missing or undecodable image, a path outside the dataset root) carry
    an ``error``; the stored path is checked on its own too, whatever ingest recorded.
    """
    import great_expectations.expectations as gxe

    lo, hi = int(config.min_chars), int(config.max_chars)
    checks = image_table_checks(tables) + [
        Check(
            SAMPLES,
            "error",
            "error is null: every image exists, decodes and lies inside the dataset root",
            gxe.ExpectColumnValuesToBeNull(column="error"),
            detail="error",
        ),
        Check(
            SAMPLES,
            "image",
            "image path is relative and has no '..' part",
            gxe.ExpectColumnValuesToNotMatchRegex(column="image", regex=UNSAFE_PATH),
        ),
        Check(
            SAMPLES,
            "n_captions",
            "n_captions >= 1: every image has a caption",
            gxe.ExpectColumnValuesToBeBetween(column="n_captions", min_value=1),
        ),
        row_count_check(tables, CAPTIONS, "n_captions"),
        *string_checks(CAPTIONS, "captions", "caption ", lo, hi),
        duplicate_check(
            CAPTIONS,
            "pair_in_train",
            len(tables.captions),
            config,
            "non-train captions repeat a train (image bytes, caption) pair",
        ),
    ]
    return checks + label_and_duplicate_checks(tables, config, "image", class_balance=config.pair_class_balance)
