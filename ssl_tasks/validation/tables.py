"""What the validation tables of every modality share (numpy/pandas only, no GX): the :class:`DatasetTables` a
modality's ``validation_suite`` returns, the per-class ``class_counts`` table, and what the manifest says about
labels.

Each modality builds its own ``samples`` table (one row per stored sample, with ``id``, ``split``, ``label`` and
``in_train``) in its package (``ssl_tasks.modalities.<name>.checks``); :mod:`ssl_tasks.validation.gx_suite` runs
the suite on these tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

TRAIN_SPLIT = "train"
CLASS_COLUMNS = ["id", "split", "label", "name", "count", "fraction", "share"]


@dataclass(frozen=True)
class DatasetTables:
    samples: pd.DataFrame  # one row per stored sample (id, split, label, in_train, ...)
    class_counts: pd.DataFrame  # one row per (labelled split, class), columns CLASS_COLUMNS
    manifest: dict

    def extra_frames(self) -> dict[str, pd.DataFrame]:
        """Tables beyond ``samples`` and ``class_counts`` that a modality's suite checks, by name."""
        return {}

    def report_fields(self, splits: list[str]) -> tuple[dict, dict]:
        """(top-level fields, metrics) a modality adds to the validation report."""
        return {}, {}


def labelled(manifest: dict) -> bool:
    """An unlabeled dataset has no label names (its labels are all -1)."""
    return bool(manifest.get("label_names"))


def fully_labelled_splits(manifest: dict) -> list[str]:
    """Splits the manifest declares labelled throughout (-1 is not allowed there)."""
    out = []
    for name, info in manifest.get("splits", {}).items():
        if int(info.get("labeled", info.get("count", 0))) >= int(info.get("count", 0)):
            out.append(name)
    return out


def class_counts_table(ds: Any, samples: pd.DataFrame) -> pd.DataFrame:
    """Count and share of each class within each split that has labelled samples.

    Rows are named by the class's name (the manifest's ``label_names``: an image folder's class folder names),
    ``<split>/class=<name>``, e.g. ``test/class=animals``; ``share`` says ``<count> of <n> (<percent>)``.
    Labels outside 0..K-1 (caught by the label expectation) and -1 (unlabeled) are not counted.
    """
    k = ds.num_classes
    names = list(getattr(ds, "label_names", None) or [str(c) for c in range(k)])
    rows: list[dict] = []
    if k == 0 or samples.empty:
        return pd.DataFrame({c: [] for c in CLASS_COLUMNS})
    for split in ds.splits():
        lab = samples.loc[samples["split"] == split, "label"].to_numpy()
        valid = lab[(lab >= 0) & (lab < k) & (lab == np.floor(lab))].astype(np.int64)
        if len(valid) == 0:
            continue
        counts = np.bincount(valid, minlength=k)
        for c in range(k):
            rows.append(
                {
                    "id": f"{split}/class={names[c]}",
                    "split": split,
                    "label": c,
                    "name": names[c],
                    "count": int(counts[c]),
                    "fraction": float(counts[c]) / len(valid),
                    "share": f"{int(counts[c])} of {len(valid)}, {counts[c] / len(valid):.1%}",
                }
            )
    return pd.DataFrame(rows, columns=CLASS_COLUMNS)


__all__ = [
    "CLASS_COLUMNS",
    "TRAIN_SPLIT",
    "DatasetTables",
    "class_counts_table",
    "fully_labelled_splits",
    "labelled",
]
