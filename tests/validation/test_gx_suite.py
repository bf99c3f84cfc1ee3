"""The Great Expectations validation stage, run for real (no mocks) on small written datasets."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ssl_tasks.core.errors import UserError
from ssl_tasks.core.io import sha256_file
from ssl_tasks.modalities.image.checks import build_tables
from ssl_tasks.modalities.image.shards import SplitData, write_dataset
from ssl_tasks.validation import ValidationConfig, ValidationFailed, validate_dataset

SHAPE = (1, 8, 8)
K = 10


def _split(images: np.ndarray, labels: np.ndarray) -> SplitData:
    return SplitData(labels=labels, chunks=iter([images[i : i + 50] for i in range(0, len(images), 50)]))


def make_dataset(
    out: Path,
    *,
    n_train: int = 200,
    n_test: int = 50,
    seed: int = 0,
    train_labels: np.ndarray | None = None,
    test_images: np.ndarray | None = None,
    label_names: list[str] | None = None,
    extra: dict[str, SplitData] | None = None,
) -> Path:
    rng = np.random.default_rng(seed)
    train = rng.integers(0, 256, size=(n_train, *SHAPE), dtype=np.uint8)
    test = rng.integers(0, 256, size=(n_test, *SHAPE), dtype=np.uint8) if test_images is None else test_images
    names = [f"c{i}" for i in range(K)] if label_names is None else label_names
    k = max(len(names), 1)
    ytr = np.arange(n_train) % k if train_labels is None else train_labels
    yte = np.arange(len(test)) % k
    if not names:
        ytr, yte = np.full(n_train, -1), np.full(len(test), -1)
    splits = {"train": _split(train, ytr), "test": _split(test, yte), **(extra or {})}
    write_dataset(out, splits, image_shape=SHAPE, label_names=names, source={"name": "synthetic"}, shard_size=64)
    return out


def shard(ds: Path, split: str, idx: int, kind: str = "images") -> Path:
    return ds / split / f"shard-{idx:05d}.{kind}.npy"


def reseal(ds: Path) -> None:
    """Record the shards' current sha256 in the manifest, as a writer that produced these bytes would have.

    The tests below change shards after writing them to stand for bad data its writer sealed as it was; the
    checksum test (test_a_changed_shard_fails_before_the_suite) is the one that leaves the manifest alone.
    """
    manifest = json.loads((ds / "manifest.json").read_text())
    for split in manifest["splits"].values():
        for entry in split["shards"]:
            entry["sha256"] = {k: sha256_file(ds / entry[k]) for k in entry["sha256"]}
    (ds / "manifest.json").write_text(json.dumps(manifest))


def fail(ds: Path, tmp_path: Path, **kw) -> tuple[str, dict]:
    reseal(ds)
    report_path = tmp_path / "report.json"
    with pytest.raises(ValidationFailed) as ei:
        validate_dataset(ds, report_path, **kw)
    report = json.loads(report_path.read_text())
    assert report == ei.value.report
    assert report["success"] is False and report["n_failed"] >= 1
    msg = str(ei.value)
    assert msg.startswith(f"validation failed for {ds}: {report['n_failed']} of {report['n_expectations']}")
    assert str(report_path) in msg
    return msg, report


def failed(report: dict) -> dict[str, dict]:
    return {e["name"]: e for e in report["expectations"] if not e["success"]}


def by_column(report: dict, column: str) -> dict:
    (entry,) = [e for e in report["expectations"] if e["column"] == column]
    return entry


def test_clean_dataset_passes_and_writes_report_and_docs(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds")
    report = validate_dataset(ds, tmp_path / "out" / "report.json", docs_dir=tmp_path / "docs")
    assert report["success"] is True
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == report
    assert report["n_samples"] == {"train": 200, "test": 50}
    assert report["n_failed"] == 0 and report["n_expectations"] == 9
    assert report["cross_split_duplicates"] == 0
    assert report["metrics"] == {"pass_rate": 1.0, "n_failed": 0, "n_warnings": 0, "cross_split_duplicates": 0,
                                 "n_samples": 250}
    assert report["warnings"] == []
    names = [e["name"] for e in report["expectations"]]
    assert "expect_column_values_to_be_in_set(shape in {1x8x8})" in names
    assert "expect_column_values_to_be_between(max <= 255)" in names
    index = (tmp_path / "docs" / "index.html").read_text()
    assert "ssl_tasks_samples" in index and "ssl_tasks_class_counts" in index
    assert list((tmp_path / "docs" / "validations").rglob("*.html"))


def test_table_columns_are_computed_from_the_arrays(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds", n_train=70, n_test=10)
    t = build_tables(ds)
    s = t.samples
    assert set(s["id"]) == {f"train/{i:06d}" for i in range(70)} | {f"test/{i:06d}" for i in range(10)}
    img = np.load(shard(ds, "train", 1))[5]  # train/000069
    row = s.set_index("id").loc["train/000069"]
    assert (row["shape"], row["dtype"], row["n_nonfinite"]) == ("1x8x8", "uint8", 0)
    assert (row["min"], row["max"]) == (img.min(), img.max())
    assert row["sha1"] == hashlib.sha1(img.tobytes()).hexdigest()
    assert not s["in_train"].any()
    counts = t.class_counts.set_index("id")
    # rows are named by class name (the manifest's label_names), not by index
    assert counts.loc["train/class=c0", "count"] == 7 and counts.loc["test/class=c9", "fraction"] == pytest.approx(0.1)
    assert counts.loc["train/class=c0", "name"] == "c0" and counts.loc["train/class=c0", "share"] == "7 of 70, 10.0%"


def test_wrong_shape_shard(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds")
    np.save(shard(ds, "train", 1), np.zeros((64, 1, 7, 7), dtype=np.uint8))
    msg, report = fail(ds, tmp_path)
    entry = failed(report)["expect_column_values_to_be_in_set(shape in {1x8x8})"]
    assert entry["unexpected_count"] == 64
    assert entry["sample_ids"] == [f"train/{i:06d}" for i in range(64, 69)]
    assert "expect_column_values_to_be_in_set(shape in {1x8x8}): 64 rows, e.g. train/000064, train/000065" in msg
    assert report["n_failed"] == 1


def test_out_of_range_float_shard(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds")
    bad = np.load(shard(ds, "test", 0)).astype(np.float32)
    bad[3, 0, 0, 0] = 300.0
    bad[7, 0, 2, 2] = -5.0
    bad[9, 0, 1, 1] = 256.5
    np.save(shard(ds, "test", 0), bad)
    msg, report = fail(ds, tmp_path, config=ValidationConfig(sample_rows=1))
    f = failed(report)
    assert set(f) == {
        "expect_column_values_to_be_in_set(dtype in {uint8})",
        "expect_column_values_to_be_between(min >= 0)",
        "expect_column_values_to_be_between(max <= 255)",
    }
    assert f["expect_column_values_to_be_between(max <= 255)"]["unexpected_count"] == 2
    assert f["expect_column_values_to_be_between(max <= 255)"]["sample_ids"] == ["test/000003"]
    assert f["expect_column_values_to_be_between(min >= 0)"]["sample_ids"] == ["test/000007"]
    assert "expect_column_values_to_be_between(max <= 255): 2 rows, e.g. test/000003\n" in msg
    assert "expect_column_values_to_be_between(min >= 0): 1 rows, e.g. test/000007" in msg
    assert f"3 of {report['n_expectations']} expectations failed" in msg


def test_nan_in_float_shard(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds")
    bad = np.load(shard(ds, "train", 0)).astype(np.float64)
    bad[2, 0, 4, 4] = np.nan
    bad[11] = np.inf
    np.save(shard(ds, "train", 0), bad)
    msg, report = fail(ds, tmp_path)
    entry = failed(report)["expect_column_values_to_be_between(n_nonfinite == 0)"]
    assert entry["unexpected_count"] == 2 and entry["sample_ids"] == ["train/000002", "train/000011"]
    assert "n_nonfinite == 0): 2 rows, e.g. train/000002, train/000011" in msg
    assert failed(report)["expect_column_values_to_be_between(max <= 255)"]["sample_ids"] == ["train/000011"]


def test_label_outside_the_label_set(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds")
    labels = np.load(shard(ds, "train", 2, "labels"))
    labels[[0, 5]] = [12, -1]
    np.save(shard(ds, "train", 2, "labels"), labels)
    msg, report = fail(ds, tmp_path)
    entry = failed(report)["expect_column_values_to_be_in_set(label in {0..9})"]
    assert entry["sample_ids"] == ["train/000128", "train/000133"]
    assert "expect_column_values_to_be_in_set(label in {0..9}): 2 rows, e.g. train/000128, train/000133" in msg
    assert report["n_failed"] == 1


def test_heavy_class_imbalance(tmp_path: Path) -> None:
    labels = np.r_[np.zeros(110, dtype=np.int64), np.arange(90) % K]  # class 0: 64% of train
    ds = make_dataset(tmp_path / "ds", train_labels=labels)
    strict = ValidationConfig(min_class_fraction=0.5, max_class_fraction=2.0)  # thresholds set: enforced
    msg, report = fail(ds, tmp_path, config=strict)
    entry = failed(report)["expect_column_values_to_be_between(class fraction of split in [0.05, 0.2])"]
    assert entry["column"] == "fraction" and entry["table"] == "class_counts" and entry["severity"] == "error"
    assert entry["unexpected_count"] == 10  # class 0 too common, classes 1..9 (9 each, 4.5%) too rare
    assert entry["sample_ids"][:2] == ["train/class=c0", "train/class=c1"]
    assert ("class fraction of split in [0.05, 0.2]): 10 rows, e.g. train/class=c0 (119 of 200, 59.5%), "
            "train/class=c1 (9 of 200, 4.5%)") in msg
    # Unset thresholds: the same band, as a warning naming the classes; validation passes.
    report = validate_dataset(ds, tmp_path / "r1.json")
    assert report["success"] and report["n_failed"] == 0 and report["n_warnings"] == 1
    assert report["warnings"][0].startswith("expect_column_values_to_be_between(class fraction of split in "
                                            "[0.05, 0.2]): 10 rows, e.g. train/class=c0 (119 of 200, 59.5%)")
    # A looser config accepts it.
    loose = ValidationConfig(min_class_fraction=0.4, max_class_fraction=7)
    report = validate_dataset(ds, tmp_path / "r2.json", config=loose)
    assert report["success"]


def test_duplicates_between_train_and_test(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(200, *SHAPE), dtype=np.uint8)  # what make_dataset(seed=0) draws
    test = rng.integers(0, 256, size=(50, *SHAPE), dtype=np.uint8)
    test[[4, 20, 31]] = train[[0, 150, 199]]
    ds = make_dataset(tmp_path / "ds", test_images=test)
    warned = validate_dataset(ds, tmp_path / "r0.json")  # unset: 0 allowed, as a warning
    assert warned["success"] and warned["n_warnings"] == 1 and "3 rows, e.g. test/000004" in warned["warnings"][0]
    msg, report = fail(ds, tmp_path, config=ValidationConfig(max_cross_split_duplicates=0))
    assert report["cross_split_duplicates"] == 3 and report["metrics"]["cross_split_duplicates"] == 3
    entry = by_column(report, "in_train")
    assert not entry["success"] and entry["sample_ids"] == ["test/000004", "test/000020", "test/000031"]
    assert "at most 0 non-train rows duplicate a train image): 3 rows, e.g. test/000004" in msg
    assert report["n_failed"] == 1
    # The allowance is exact: 3 passes, 2 fails.
    ok = validate_dataset(ds, tmp_path / "r3.json", config=ValidationConfig(max_cross_split_duplicates=3))
    assert ok["success"] and by_column(ok, "in_train")["unexpected_count"] == 3
    _, report = fail(ds, tmp_path, config=ValidationConfig(max_cross_split_duplicates=2))
    assert not by_column(report, "in_train")["success"]


def test_truncated_shard_breaks_the_manifest_row_count(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds")
    np.save(shard(ds, "train", 0), np.load(shard(ds, "train", 0))[:60])
    np.save(shard(ds, "train", 0, "labels"), np.load(shard(ds, "train", 0, "labels"))[:60])
    msg, report = fail(ds, tmp_path)
    assert "expect_table_row_count_to_equal(row count == manifest total 250): observed 246" in msg
    assert report["n_samples"]["train"] == 196


def test_images_and_labels_out_of_step_is_a_user_error(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds")
    np.save(shard(ds, "train", 0, "labels"), np.zeros(10, dtype=np.int64))
    reseal(ds)
    with pytest.raises(UserError, match="shard 0: images .* do not line up"):
        validate_dataset(ds, tmp_path / "report.json")


def test_unlabeled_dataset_skips_label_checks(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds", label_names=[])
    report = validate_dataset(ds, tmp_path / "report.json")
    assert report["success"] and report["n_expectations"] == 7
    assert {e["column"] for e in report["expectations"]}.isdisjoint({"label", "fraction"})


def test_unlabeled_split_in_a_labelled_dataset(tmp_path: Path) -> None:
    extra = {"unlabeled": _split(np.full((30, *SHAPE), 7, dtype=np.uint8), np.full(30, -1))}
    ds = make_dataset(tmp_path / "ds", extra=extra)
    report = validate_dataset(ds, tmp_path / "report.json")
    assert report["success"] and report["n_samples"]["unlabeled"] == 30
    # -1 is still rejected in a split the manifest declares fully labelled.
    labels = np.load(shard(ds, "test", 0, "labels"))
    labels[1] = -1
    np.save(shard(ds, "test", 0, "labels"), labels)
    _, report = fail(ds, tmp_path)
    assert by_column(report, "label")["sample_ids"] == ["test/000001"]


def test_failed_run_still_builds_docs(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds")
    np.save(shard(ds, "train", 1), np.zeros((64, 1, 7, 7), dtype=np.uint8))
    fail(ds, tmp_path, docs_dir=tmp_path / "docs")
    assert (tmp_path / "docs" / "index.html").is_file()


def test_a_changed_shard_fails_before_the_suite(tmp_path: Path) -> None:
    """One flipped byte, same size: the manifest's sha256 catches it and names the file; the suite never runs."""
    from ssl_tasks.data.ingest import ingest

    ds = tmp_path / "digits"
    ingest("sklearn_digits", None, ds, shard_size=500)
    clean = validate_dataset(ds, tmp_path / "clean.json")
    assert clean["success"]
    target = shard(ds, "train", 1)
    data = bytearray(target.read_bytes())
    data[-7] ^= 0x01  # a pixel value, not the .npy header: the array still loads, with one sample changed
    target.write_bytes(bytes(data))
    report_path = tmp_path / "report.json"
    with pytest.raises(ValidationFailed) as ei:
        validate_dataset(ds, report_path, docs_dir=tmp_path / "docs")
    msg = str(ei.value)
    assert msg.splitlines()[0] == (f"validation failed for {ds}: shard {target} does not match the sha256 in the "
                                   "manifest (corrupted?); re-ingest the dataset (the Great Expectations suite did "
                                   "not run on changed files)")
    assert msg.splitlines()[1:] == [f"full report: {report_path}"]
    report = json.loads(report_path.read_text())
    assert report == ei.value.report and report["success"] is False and str(target) in report["checksums"]
    assert not (tmp_path / "docs").exists() and clean["checksums"] == "verified"
    (ds / "train" / "shard-00000.labels.npy").unlink()
    with pytest.raises(ValidationFailed, match="missing shard file .*shard-00000.labels.npy"):
        validate_dataset(ds, report_path)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(UserError, match="min_class_fraction"):
        ValidationConfig(min_class_fraction=3.0, max_class_fraction=2.0)
    with pytest.raises(UserError, match="max_cross_split_duplicates"):
        ValidationConfig(max_cross_split_duplicates=-1)


def test_importing_the_package_does_not_import_gx() -> None:
    code = "import sys, ssl_tasks.validation; print('great_expectations' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_sklearn_digits(tmp_path: Path) -> None:
    """Real data: the 1,797 sklearn digits, stratified 80/20 with a fixed seed, pass the defaults."""
    from sklearn import datasets  # a pinned dependency: the default pipeline's data

    digits = datasets.load_digits()
    images = np.round(digits.images * 255 / 16).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(0)
    per_class = [rng.permutation(np.flatnonzero(y == c)) for c in range(10)]
    test_idx = np.concatenate([idx[: round(0.2 * len(idx))] for idx in per_class])
    is_test = np.zeros(len(y), dtype=bool)
    is_test[test_idx] = True
    splits = {
        "train": SplitData(labels=y[~is_test], chunks=iter([images[~is_test]])),
        "test": SplitData(labels=y[is_test], chunks=iter([images[is_test]])),
    }
    ds = tmp_path / "digits"
    write_dataset(ds, splits, image_shape=(1, 8, 8), label_names=[str(i) for i in range(10)], source={"name": "digits"})
    report = validate_dataset(ds, tmp_path / "report.json", docs_dir=tmp_path / "docs")
    assert report["success"], report
    assert report["n_samples"] == {"train": 1438, "test": 359}
    assert report["cross_split_duplicates"] == 0  # digits holds no exact duplicate images at all
    assert (tmp_path / "docs" / "index.html").is_file()


def test_report_is_the_same_in_every_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workspaces validating the same data write byte-identical reports (no absolute paths), so DVC reuses the
    stages that depend on the report instead of rerunning them in each workspace."""
    reports = []
    for ws in ("ws-a", "ws-b"):
        root = tmp_path / ws
        make_dataset(root / "data" / "d")
        monkeypatch.chdir(root)  # a stage runs in its project or workspace root
        validate_dataset(Path("data/d"), root / "reports" / "d.json", root / "reports" / "d_docs")
        reports.append((root / "reports" / "d.json").read_bytes())
    assert reports[0] == reports[1]
    report = json.loads(reports[0])
    assert report["dataset"] == "data/d" and report["data_docs"] == "reports/d_docs/index.html"
