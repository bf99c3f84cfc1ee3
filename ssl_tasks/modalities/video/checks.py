"""The video validation suite (GX): one ``samples`` row per stored clip, the main label's ``class_counts`` and a
``label_set_counts`` table for the extra label sets, and the checks on them.

``samples`` columns: ``id`` (``<split>/<source path or generated id>``), ``split``, ``label`` and ``label_name``,
the file's facts as ingested (``source_fps``, ``source_frames``, ``source_height``, ``source_width``,
``size_changes``: frame-size changes inside the clip, ``decode_error``: FFmpeg's message where decoding stopped
early), ``frames_needed`` (frames x stride), ``missing_frames`` (how many of those the file lacked: the stored clip
repeats its last frame instead), ``upscaled`` (the source's shorter side is below the stored size), the stored
clip's motion (``max_frame_diff``, ``mean_frame_diff``: largest and mean absolute difference between consecutive
frames) and ``constant`` (no motion at all: ``max_frame_diff == 0``), ``blank`` (every pixel 0), ``sha256`` of the
stored clip and ``in_train`` (a non-train clip identical to a train clip). Each failed expectation names its
offending clips (and a detail, e.g. FFmpeg's message or the frame count) in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from ssl_tasks.core.errors import UserError
from ssl_tasks.modalities.video.shards import VideoDataset
from ssl_tasks.validation.gx_suite import (
    SAMPLES,
    Check,
    ValidationConfig,
    fmt,
    label_and_duplicate_checks,
    row_count_check,
)
from ssl_tasks.validation.tables import CLASS_COLUMNS, TRAIN_SPLIT, DatasetTables, class_counts_table

LABEL_SET_COUNTS = "label_set_counts"
CHUNK = 256  # clips per motion computation (int16 differences of 256 clips of 16x3x64x64: ~100 MB)


@dataclass(frozen=True)
class VideoValidationConfig:
    """Thresholds of the video checks, with defaults that suit real clips (phone or camera footage at 24-60 fps,
    any size) as well as the synthetic benchmark:

    - ``min_fps`` / ``max_fps`` (1 / 240; null: unchecked): each file's frame rate; 0 means the container declares
      none (a still image or a broken stream), above 240 is a misread time base;
    - ``max_missing_frames`` (0): how many of the ``frames x stride`` frames a clip's file may lack (those are the
      last frame repeated); raise it to accept short clips;
    - ``frame_height`` / ``frame_width`` (null: any): the size every source file must have, when the input should
      be uniform (frames of other sizes are still centre-cropped and resized, so mixed sizes are legal by default);
    - ``max_size_changes`` (0): frame-size changes allowed inside one clip (a stream that switches resolution);
    - ``max_constant_fraction`` (0): the share of clips without any motion (every frame identical) allowed; real
      footage, even of a still scene, carries sensor and coding noise, so an exactly constant clip is a still
      image or a frozen stream.

    Class balance and cross-split duplicates use the common ``ValidationConfig`` keys.
    """

    min_fps: float | None = 1.0
    max_fps: float | None = 240.0
    max_missing_frames: int = 0
    frame_height: int | None = None
    frame_width: int | None = None
    max_size_changes: int = 0
    max_constant_fraction: float = 0.0

    def __post_init__(self) -> None:
        for name in ("min_fps", "max_fps"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < float("inf")):
                raise UserError(f"{name} must be a number >= 0 or null, got {v!r}")
        if self.min_fps is not None and self.max_fps is not None and self.min_fps > self.max_fps:
            raise UserError(f"validation needs min_fps <= max_fps, got {self.min_fps} and {self.max_fps}")
        for name in ("max_missing_frames", "max_size_changes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise UserError(f"{name} must be an integer >= 0, got {v!r}")
        for name in ("frame_height", "frame_width"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise UserError(f"{name} must be a positive integer or null, got {v!r}")
        v = self.max_constant_fraction
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise UserError(f"max_constant_fraction must be in [0, 1], got {v!r}")

    @classmethod
    def of(cls, config: Any) -> VideoValidationConfig:
        """The video thresholds ``config`` (e.g. a ``ValidationConfig``) sets under these field names; the defaults
        for those it lacks."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls) if hasattr(config, f.name)})


@dataclass(frozen=True)
class VideoTables(DatasetTables):
    label_set_counts: pd.DataFrame = field(default_factory=pd.DataFrame)  # (split, label set, class) rows

    def extra_frames(self) -> dict[str, pd.DataFrame]:
        return {LABEL_SET_COUNTS: self.label_set_counts}

    def report_fields(self, splits: list[str]) -> tuple[dict, dict]:
        s, m = self.samples, self.manifest
        stats = {"frames": int(m["frames"]), "channels": int(m["channels"]), "height": int(m["height"]),
                 "width": int(m["width"]), "fps": float(m["fps"]), "synthetic": bool(m.get("synthetic", False)),
                 "constant_clips": int(s["constant"].sum()), "short_clips": int((s["missing_frames"] > 0).sum()),
                 "decode_errors": int((s["decode_error"] != "").sum()),
                 "mean_frame_diff": round(float(s["mean_frame_diff"].mean()), 4) if len(s) else 0.0}
        metrics = {f"video_{k}": v for k, v in stats.items() if not isinstance(v, bool)}
        return {"video": stats}, metrics


def motion(clips: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per clip of uint8 (N, T, C, H, W): the largest and the mean absolute difference between consecutive frames,
    and the largest pixel; in chunks, so a memory-mapped shard is read once without a full int16 copy."""
    n = len(clips)
    peak_diff, mean_diff, peak = np.zeros(n), np.zeros(n), np.zeros(n)
    for a in range(0, n, CHUNK):
        x = np.asarray(clips[a : a + CHUNK])  # (n, T, C, H, W)
        peak[a : a + len(x)] = x.reshape(len(x), -1).max(axis=1)
        if x.shape[1] < 2:
            continue
        d = np.abs(np.diff(x.astype(np.int16), axis=1)).reshape(len(x), -1)  # (n, (T-1)*C*H*W)
        peak_diff[a : a + len(x)] = d.max(axis=1)
        mean_diff[a : a + len(x)] = d.mean(axis=1)
    return peak_diff, mean_diff, peak


def _label_set_counts(ds: VideoDataset) -> pd.DataFrame:
    """Count, share and ``relative`` share (share x classes: 1 is uniform) of each class of each extra label set
    in each split; rows ``<split>/<set>=<class name>``."""
    rows: list[dict[str, Any]] = []
    for split in ds.splits():
        extra = ds.column(split, "extra")
        for j, (name, names) in enumerate(ds.label_sets.items()):
            col = np.asarray(extra[:, j])
            valid = col[(col >= 0) & (col < len(names))]
            if not len(valid):
                continue
            counts = np.bincount(valid, minlength=len(names))
            for c, cname in enumerate(names):
                frac = counts[c] / len(valid)
                rows.append({"id": f"{split}/{name}={cname}", "split": split, "label": c, "name": cname,
                             "count": int(counts[c]), "fraction": float(frac),
                             "share": f"{int(counts[c])} of {len(valid)}, {frac:.1%}", "set": name,
                             "relative": float(frac * len(names))})
    return pd.DataFrame(rows, columns=[*CLASS_COLUMNS, "set", "relative"])


SAMPLE_COLUMNS = ["id", "split", "label", "label_name", "source_fps", "source_frames", "frames_needed",
                  "missing_frames", "frames_info", "source_height", "source_width", "source_size", "size_changes",
                  "upscaled", "decode_error", "max_frame_diff", "mean_frame_diff", "constant", "blank", "sha256"]


def build_video_tables(ds: VideoDataset) -> VideoTables:
    out = []
    names = ds.label_names
    for split in ds.splits():
        rows = ds.rows(split)
        labels = np.asarray(ds.column(split, "labels"))
        peak_diff, mean_diff, peak = (np.concatenate(p) if p else np.zeros(0) for p in
                                      zip(*(motion(s["clips"]) for s in ds.shards(split))))
        for i, r in enumerate(rows):
            needed = ds.frames * int(r.get("stride", 1))
            src, lab = int(r["source_frames"]), int(labels[i])
            h, w = int(r["source_height"]), int(r["source_width"])
            out.append({"id": f"{split}/{r['id']}", "split": split, "label": lab,
                        "label_name": names[lab] if 0 <= lab < len(names) else "",
                        "source_fps": float(r["source_fps"]), "source_frames": src, "frames_needed": needed,
                        "missing_frames": max(0, needed - src), "frames_info": f"{src} of {needed} frames",
                        "source_height": h, "source_width": w, "source_size": f"{w}x{h}",
                        "size_changes": int(r.get("size_changes", 0)), "upscaled": min(h, w) < min(ds.height, ds.width),
                        "decode_error": str(r.get("decode_error", "")), "max_frame_diff": float(peak_diff[i]),
                        "mean_frame_diff": float(mean_diff[i]), "constant": bool(peak_diff[i] == 0),
                        "blank": bool(peak[i] == 0), "sha256": r["sha256"]})
    samples = pd.DataFrame(out, columns=SAMPLE_COLUMNS)
    train = samples["split"] == TRAIN_SPLIT
    samples["in_train"] = samples["sha256"].isin(set(samples.loc[train, "sha256"])) & ~train
    return VideoTables(samples=samples, class_counts=class_counts_table(ds, samples), manifest=ds.manifest,
                       label_set_counts=_label_set_counts(ds))


def _between(column: str, lo: float | None, hi: float | None, what: str, detail: str | None = None,
             **kwargs: Any) -> Check:
    import great_expectations.expectations as gxe

    return Check(SAMPLES, column, what, gxe.ExpectColumnValuesToBeBetween(column=column, min_value=lo, max_value=hi,
                                                                          **kwargs), detail=detail)


def _in_set(column: str, values: list[Any], what: str, detail: str | None = None, severity: str = "error",
            **kwargs: Any) -> Check:
    import great_expectations.expectations as gxe

    return Check(SAMPLES, column, what, gxe.ExpectColumnValuesToBeInSet(column=column, value_set=values, **kwargs),
                 detail=detail, severity=severity)


def video_suite(tables: VideoTables, config: ValidationConfig,
                video: VideoValidationConfig | None = None) -> list[Check]:
    """The checks on ``build_video_tables``' tables; ``video`` defaults to ``VideoValidationConfig.of(config)``."""
    import great_expectations.expectations as gxe

    v = VideoValidationConfig.of(config) if video is None else video
    n = len(tables.samples)
    checks = [
        row_count_check(tables),
        _between("source_frames", 1, None, "every clip decoded to at least one frame", detail="frames_info"),
        _in_set("decode_error", [""], "decode_error == '': every clip decoded without an FFmpeg error (a truncated "
                "or corrupt file)", detail="decode_error"),
        _between("missing_frames", 0, v.max_missing_frames, f"frames as declared: at most {v.max_missing_frames} "
                 "of frames x stride missing (the clip repeats its last frame)", detail="frames_info"),
        _between("size_changes", 0, v.max_size_changes, f"at most {v.max_size_changes} frame-size changes inside "
                 "a clip", detail="source_size"),
        _in_set("upscaled", [False], "upscaled == False: source frames at least as large as the stored frames "
                "(warning: smaller ones are upsampled)", detail="source_size", severity="warning"),
    ]
    if v.min_fps is not None or v.max_fps is not None:
        lo, hi = v.min_fps, v.max_fps
        checks.append(_between("source_fps", lo, hi, f"frame rate in [{fmt(lo) if lo is not None else '-inf'}, "
                               f"{fmt(hi) if hi is not None else 'inf'}] fps", detail="source_fps"))
    if v.frame_height is not None:
        checks.append(_in_set("source_height", [v.frame_height], f"source frame height == declared {v.frame_height}",
                              detail="source_size"))
    if v.frame_width is not None:
        checks.append(_in_set("source_width", [v.frame_width], f"source frame width == declared {v.frame_width}",
                              detail="source_size"))
    allowed = v.max_constant_fraction
    kwargs: dict[str, Any] = {"mostly": max(0.0, 1.0 - allowed - 0.5 / n)} if allowed > 0 and n else {}
    checks.append(_in_set("constant", [False], f"constant == False: at most {fmt(allowed)} of the clips without "
                          "motion (every frame identical)", detail="label_name", **kwargs))
    checks += label_and_duplicate_checks(tables, config, "clip (identical frames)")
    counts = tables.label_set_counts
    if counts is not None and not counts.empty:
        lo, hi = config.class_band
        checks.append(Check(LABEL_SET_COUNTS, "relative", f"extra label sets: class share x classes in "
                            f"[{fmt(lo)}, {fmt(hi)}] (1 = uniform)",
                            gxe.ExpectColumnValuesToBeBetween(column="relative", min_value=lo, max_value=hi),
                            detail="share", severity="error" if config.class_band_enforced else "warning"))
    return checks


def video_validation_suite(ds: VideoDataset, config: ValidationConfig,
                           video: VideoValidationConfig | None = None) -> tuple[VideoTables, list[Check]]:
    """``(tables, checks)`` of a dataset, as ``Modality.validation_suite`` returns them."""
    tables = build_video_tables(ds)
    return tables, video_suite(tables, config, video)


__all__ = ["VideoTables", "VideoValidationConfig", "build_video_tables", "motion", "video_suite",
           "video_validation_suite"]
