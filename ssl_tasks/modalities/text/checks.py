"""Per-sample and per-class tables of an ingested text dataset (numpy/pandas only, no GX).

The text counterpart of :mod:`ssl_tasks.modalities.image.checks`: same ``DatasetTables``, same
``class_counts`` table, and a ``samples`` table of per-text statistics. Shards are read one
at a time; SST-2 (68,221 texts) takes well under a second.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from ssl_tasks.modalities.text.shards import TextDataset
from ssl_tasks.validation.gx_suite import (
    SAMPLES,
    Check,
    ValidationConfig,
    fmt,
    label_and_duplicate_checks,
    row_count_check,
    string_checks,
)
from ssl_tasks.validation.tables import TRAIN_SPLIT, DatasetTables, class_counts_table

TEXT_SAMPLE_COLUMNS = ["id", "split", "label", "n_chars", "n_words", "blank", "decode_error", "sha1", "in_train"]
REPLACEMENT = "\ufffd"  # what ingest decodes undecodable bytes to


def _split_table(ds: TextDataset, split: str) -> pd.DataFrame:
    texts: list[str] = []
    labels = [np.zeros(0, dtype=np.int64)]
    for t, lab in ds.iter_shards(split):
        texts.extend(t)
        labels.append(lab)
    width = max(6, len(str(max(len(texts) - 1, 0))))
    return pd.DataFrame(
        {
            "id": [f"{split}/{i:0{width}d}" for i in range(len(texts))],
            "split": [split] * len(texts),
            "label": np.concatenate(labels),
            "n_chars": np.array([len(t) for t in texts], dtype=np.int64),
            "n_words": np.array([len(t.split()) for t in texts], dtype=np.int64),
            "blank": np.array([not t.strip() for t in texts], dtype=bool),
            "decode_error": np.array([REPLACEMENT in t for t in texts], dtype=bool),
            "sha1": [hashlib.sha1(t.encode("utf-8")).hexdigest() for t in texts],
        }
    )


def build_text_tables(ds: TextDataset) -> DatasetTables:
    """Read every shard of ``ds`` into the per-text and per-class tables.

    ``in_train`` marks a non-train text whose exact text (by sha1 of its UTF-8) also occurs in train.
    """
    parts = [_split_table(ds, split) for split in ds.splits()]
    samples = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=TEXT_SAMPLE_COLUMNS[:-1])
    train_mask = (samples["split"] == TRAIN_SPLIT).to_numpy(dtype=bool)
    train_hashes = pd.Index(samples.loc[train_mask, "sha1"].unique())
    samples["in_train"] = samples["sha1"].isin(train_hashes).to_numpy(dtype=bool) & ~train_mask
    return DatasetTables(samples=samples, class_counts=class_counts_table(ds, samples), manifest=ds.manifest)


def text_suite(tables: DatasetTables, config: ValidationConfig) -> list[Check]:
    """The text suite: decoding, blanks, length bounds per text and on average, then the shared checks."""
    import great_expectations.expectations as gxe

    lo, hi = int(config.min_chars), int(config.max_chars)
    checks = [
        row_count_check(tables),
        *string_checks(SAMPLES, "texts", "", lo, hi),
    ]
    wlo, whi = config.min_mean_words, config.max_mean_words
    if wlo is not None or whi is not None:
        bounds = ([f">= {fmt(wlo)}"] if wlo is not None else []) + ([f"<= {fmt(whi)}"] if whi is not None else [])
        checks.append(
            Check(
                SAMPLES,
                "n_words",
                "mean n_words " + " and ".join(bounds),
                gxe.ExpectColumnMeanToBeBetween(column="n_words", min_value=wlo, max_value=whi),
            )
        )
    return checks + label_and_duplicate_checks(tables, config, "text")


__all__ = ["REPLACEMENT", "TEXT_SAMPLE_COLUMNS", "build_text_tables", "text_suite"]
