"""The speech validation suite: one ``samples`` row per stored clip and the GX checks on it.

Columns: ``id`` (``<split>/<source path>``), ``split``, ``label``, ``group`` and its name, the file's own sample
rate, channels and duration, the stored duration, the share of samples at full scale (``clip_fraction``), the RMS
level of the stored clip (``rms_db``), non-finite samples, the sha256 of the stored samples, ``in_train`` (a
non-train clip whose audio is identical to a train clip's) and ``group_in_train`` (a non-train clip whose group,
e.g. speaker, also has train clips). Each failed expectation names its offending clips in the report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ssl_tasks.modalities.speech.shards import SpeechDataset, to_float
from ssl_tasks.validation.gx_suite import (
    SAMPLES,
    Check,
    ValidationConfig,
    fmt,
    label_and_duplicate_checks,
    row_count_check,
)
from ssl_tasks.validation.tables import TRAIN_SPLIT, DatasetTables, class_counts_table


@dataclass(frozen=True)
class SpeechTables(DatasetTables):
    def report_fields(self, splits: list[str]) -> tuple[dict, dict]:
        s = self.samples
        stats = {"sample_rate": int(self.manifest["sample_rate"]), "num_samples": int(self.manifest["num_samples"]),
                 "hours": round(float(s["seconds"].sum()) / 3600, 4),
                 "mean_seconds": round(float(s["seconds"].mean()), 4) if len(s) else 0.0,
                 "groups": len(self.manifest.get("group_names", [])),
                 "groups_in_two_splits": int(s.loc[s["group_in_train"], "group"].nunique()),
                 "clipped_clips": int((s["clip_fraction"] > 0).sum()),
                 "quietest_rms_db": round(float(s["rms_db"].min()), 2) if len(s) else 0.0}
        return {"audio": stats}, {f"audio_{k}": v for k, v in stats.items()}


def build_speech_tables(ds: SpeechDataset) -> SpeechTables:
    rows = []
    groups = ds.group_names
    for split in ds.splits():
        clips = ds.clips(split)
        i = 0
        for shard in ds.shards(split):
            for j in range(len(shard["lengths"])):
                c, n = clips[i], int(shard["lengths"][j])
                wave = to_float(np.asarray(shard["waves"][j, :n]))
                g = int(shard["groups"][j])
                rows.append({"id": f"{split}/{c['id']}", "split": split, "label": int(shard["labels"][j]), "group": g,
                             "group_name": groups[g] if 0 <= g < len(groups) else "", "source_rate": c["source_rate"],
                             "source_channels": c["source_channels"], "source_seconds": c["source_seconds"],
                             "seconds": n / ds.sample_rate, "clip_fraction": c["clip_fraction"],
                             "rms_db": c["rms_db"], "n_nonfinite": int((~np.isfinite(wave)).sum()),
                             "sha256": c["sha256"]})
                i += 1
    cols = ["id", "split", "label", "group", "group_name", "source_rate", "source_channels", "source_seconds",
            "seconds", "clip_fraction", "rms_db", "n_nonfinite", "sha256"]
    samples = pd.DataFrame(rows, columns=cols)
    train = samples["split"] == TRAIN_SPLIT
    samples["in_train"] = samples["sha256"].isin(set(samples.loc[train, "sha256"])) & ~train
    grouped = samples["group"] >= 0
    samples["group_in_train"] = samples["group"].isin(set(samples.loc[train & grouped, "group"])) & ~train & grouped
    return SpeechTables(samples=samples, class_counts=class_counts_table(ds, samples), manifest=ds.manifest)


def _between(column: str, lo: float | None, hi: float | None, what: str) -> Check:
    import great_expectations.expectations as gxe

    return Check(SAMPLES, column, what, gxe.ExpectColumnValuesToBeBetween(column=column, min_value=lo, max_value=hi))


def speech_suite(tables: SpeechTables, config: ValidationConfig) -> list[Check]:
    import great_expectations.expectations as gxe

    checks = [
        row_count_check(tables),
        _between("n_nonfinite", 0, 0, "every clip decoded to finite samples"),
        _between("source_seconds", config.min_seconds, config.max_seconds,
                 f"clip duration in [{fmt(config.min_seconds)}, {fmt(config.max_seconds)}] s"),
        _between("clip_fraction", 0, config.max_clipping_fraction,
                 f"share of samples at full scale <= {fmt(config.max_clipping_fraction)} (clipping)"),
        _between("rms_db", config.min_rms_db, None, f"RMS level >= {fmt(config.min_rms_db)} dBFS (not near-silent)"),
    ]
    if config.sample_rate is not None:
        checks.append(Check(SAMPLES, "source_rate", f"file sample rate == declared {config.sample_rate} Hz",
                            gxe.ExpectColumnValuesToBeInSet(column="source_rate", value_set=[config.sample_rate])))
    if config.channels is not None:
        checks.append(Check(SAMPLES, "source_channels", f"file channels == declared {config.channels}",
                            gxe.ExpectColumnValuesToBeInSet(column="source_channels", value_set=[config.channels])))
    checks += label_and_duplicate_checks(tables, config, "clip (identical audio)")
    if tables.manifest.get("group_names") and not config.shared_groups:
        checks.append(Check(SAMPLES, "group_in_train", "group_in_train == False: no group (speaker) has clips in "
                            "train and another split (set validation.shared_groups: true if the split shares them)",
                            gxe.ExpectColumnValuesToBeInSet(column="group_in_train", value_set=[False]),
                            detail="group_name"))
    return checks


__all__ = ["SpeechTables", "build_speech_tables", "speech_suite"]
