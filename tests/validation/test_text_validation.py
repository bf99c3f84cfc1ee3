"""The text suite of the GX validation stage, run for real on SST-2, Tiny Shakespeare and small files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import validation_failure

from ssl_tasks.core.errors import UserError
from ssl_tasks.data.ingest import ingest
from ssl_tasks.modalities.text.checks import build_text_tables
from ssl_tasks.modalities.text.shards import TextDataset, TextSplit, write_text_dataset
from ssl_tasks.validation import ValidationConfig, validate_dataset

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SHAKESPEARE = SHARED / "tiny_shakespeare" / "input.txt"
SST2 = SHARED / "sst2"

DECODE = "expect_column_values_to_be_in_set(decode_error == False: texts decode as UTF-8)"
BLANK = "expect_column_values_to_be_in_set(blank == False: no empty or whitespace-only texts)"
N_CHARS = "expect_column_values_to_be_between(n_chars in [1, 20000])"
DUPLICATES = "expect_column_values_to_be_in_set(in_train == False: at most 0 non-train rows duplicate a train text)"


fail = validation_failure


def table(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / "in" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    return path


def labelled_tsv(n: int, extra: str = "") -> bytes:
    rows = "".join(f"review number {i} is {'good' if i % 2 else 'bad'}\t{i % 2}\n" for i in range(n))
    return ("text\tlabel\n" + rows + extra).encode()


def test_sst2_passes_the_defaults_and_builds_docs(tmp_path: Path) -> None:
    ds = tmp_path / "sst2"
    ingest("text_table", SST2, ds, options={"test_file": "dev.tsv", "text_column": "sentence", "label_column": "label"})
    report = validate_dataset(ds, tmp_path / "report.json", docs_dir=tmp_path / "docs")
    assert report["success"], report
    assert report["n_samples"] == {"train": 67349, "test": 872}
    assert report["n_expectations"] == 7 and report["cross_split_duplicates"] == 0  # README: no dev text in train
    names = [e["name"] for e in report["expectations"]]
    assert names[:4] == [
        "expect_table_row_count_to_equal(row count == manifest total 68221)", DECODE, BLANK, N_CHARS
    ]
    assert "expect_column_values_to_be_between(class fraction of split in [0.25, 1])" in names
    index = (tmp_path / "docs" / "index.html").read_text()
    assert "ssl_tasks_samples" in index and "ssl_tasks_class_counts" in index
    # Train holds short phrases (mean 9.4 tokens per the README): a mean-length bound sees it.
    msg, failed = fail(ds, tmp_path, config=ValidationConfig(min_mean_words=10))
    entry = failed["expect_column_mean_to_be_between(mean n_words >= 10)"]
    assert entry["column"] == "n_words" and 9.4 < entry["observed_value"] < 10
    assert f"expect_column_mean_to_be_between(mean n_words >= 10): observed {entry['observed_value']}" in msg


def test_tiny_shakespeare_passes_the_defaults(tmp_path: Path) -> None:
    """Speaker turns with the nanoGPT-style tail split (last 10%): no turn of the tail repeats one of train.

    A random split does put repeated short turns ("GLOUCESTER:", "CORIOLANUS:\\nAway!") on both sides:
    15 at test_fraction=0.1, 21 at 0.2; max_cross_split_duplicates is the knob for that case.
    """
    ds = tmp_path / "shakespeare"
    ingest("text", SHAKESPEARE, ds, test_fraction=0.1, options={"unit": "paragraph", "split": "tail"})
    report = validate_dataset(ds, tmp_path / "report.json")
    assert report["success"], report
    assert report["n_samples"] == {"train": 6500, "test": 722} and report["n_expectations"] == 5
    assert report["cross_split_duplicates"] == 0


def test_table_columns_are_computed_from_the_texts(tmp_path: Path) -> None:
    splits = {
        "train": TextSplit(["one two  three", "caf\u00e9", "  "], np.array([0, 1, 0])),
        "test": TextSplit(["caf\u00e9", "bad \ufffd"], np.array([1, 0])),
    }
    write_text_dataset(tmp_path / "ds", splits, label_names=["a", "b"], source={"name": "synthetic"})
    t = build_text_tables(TextDataset(tmp_path / "ds"))
    s = t.samples.set_index("id")
    assert sorted(s.index) == ["test/000000", "test/000001", "train/000000", "train/000001", "train/000002"]
    assert s.loc["train/000000", ["n_chars", "n_words"]].tolist() == [14, 3]
    assert s.loc["train/000001", "sha1"] == hashlib.sha1("caf\u00e9".encode()).hexdigest()
    assert s.index[s["blank"]].tolist() == ["train/000002"]
    assert s.index[s["decode_error"]].tolist() == ["test/000001"]
    assert s.index[s["in_train"]].tolist() == ["test/000000"]  # train rows are never in_train
    assert s["label"].dtype == np.int64
    counts = t.class_counts.set_index("id")
    assert counts.loc["train/class=a", "count"] == 2 and counts.loc["test/class=b", "fraction"] == 0.5


def test_undecodable_bytes_fail_decode_error(tmp_path: Path) -> None:
    bad = b"review number 9 is caf\xe9 good\t1\n"  # Latin-1, not UTF-8
    path = table(tmp_path, "reviews.tsv", labelled_tsv(20) + bad + labelled_tsv(20)[len(b"text\tlabel\n"):])
    ds = tmp_path / "ds"
    m = ingest("text_table", path, ds, test_fraction=0.2, options={"label_column": "label"})
    assert m["source"]["texts_with_replacement_char"] == 1
    texts = {split: TextDataset(ds).load(split)[0] for split in ("train", "test")}
    (split, idx), = [(k, i) for k, v in texts.items() for i, t in enumerate(v) if "\ufffd" in t]
    bad_id = f"{split}/{idx:06d}"
    msg, failed = fail(ds, tmp_path)
    assert DECODE in failed and failed[DECODE]["sample_ids"] == [bad_id]
    assert f"{DECODE}: 1 rows, e.g. {bad_id}" in msg


def test_empty_text_cell_fails_blank(tmp_path: Path) -> None:
    path = table(tmp_path, "reviews.csv", b"text,label\n" + b"".join(b"text %d,%d\n" % (i, i % 2) for i in range(9))
                 + b'"   ",1\n')
    ds = tmp_path / "ds"
    ingest("text_table", path, ds, test_fraction=0.3, split_seed=3, options={"label_column": "label"})
    texts = {split: TextDataset(ds).load(split)[0] for split in ("train", "test")}
    (bad_id,) = [f"{k}/{i:06d}" for k, v in texts.items() for i, t in enumerate(v) if t == ""]
    msg, failed = fail(ds, tmp_path)
    assert set(failed) == {BLANK, N_CHARS}  # the empty text is also shorter than min_chars
    assert failed[BLANK]["sample_ids"] == [bad_id] and f"{BLANK}: 1 rows, e.g. {bad_id}" in msg


def test_test_text_duplicated_from_train_fails(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": f"sentence {i}"}) + "\n" for i in range(20)))
    (folder / "test.jsonl").write_text('{"text": "new one"}\n{"text": "  sentence 7 "}\n{"text": "another"}\n')
    ds = tmp_path / "ds"
    ingest("text_table", folder, ds)
    msg, failed = fail(ds, tmp_path, config=ValidationConfig(max_cross_split_duplicates=0))  # set: enforced
    assert set(failed) == {DUPLICATES}
    assert failed[DUPLICATES]["sample_ids"] == ["test/000001"]
    assert f"{DUPLICATES}: 1 rows, e.g. test/000001" in msg
    ok = validate_dataset(ds, tmp_path / "r2.json", config=ValidationConfig(max_cross_split_duplicates=1))
    assert ok["success"] and ok["cross_split_duplicates"] == 1


def test_length_bounds_and_failed_docs(tmp_path: Path) -> None:
    texts = ["short"] * 8 + ["x" * 300, "a fine text of some length"]
    splits = {"train": TextSplit(texts, np.full(10, -1)), "test": TextSplit(["tiny", "ok text"], np.full(2, -1))}
    write_text_dataset(tmp_path / "ds", splits, label_names=[], source={"name": "synthetic"})
    config = ValidationConfig(min_chars=5, max_chars=100, max_mean_words=1.2)
    msg, failed = fail(tmp_path / "ds", tmp_path, config=config, docs_dir=tmp_path / "docs")
    entry = failed["expect_column_values_to_be_between(n_chars in [5, 100])"]
    assert entry["unexpected_count"] == 2 and sorted(entry["sample_ids"]) == ["test/000000", "train/000008"]
    assert "n_chars in [5, 100]): 2 rows, e.g. " in msg
    mean = failed["expect_column_mean_to_be_between(mean n_words <= 1.2)"]
    assert mean["observed_value"] == pytest.approx(18 / 12)
    assert (tmp_path / "docs" / "index.html").is_file()


def test_config_rejects_bad_text_bounds() -> None:
    with pytest.raises(UserError, match="min_chars <= max_chars"):
        ValidationConfig(min_chars=10, max_chars=5)
    with pytest.raises(UserError, match="max_chars must be an integer >= 0"):
        ValidationConfig(max_chars=-1)
    with pytest.raises(UserError, match="min_mean_words must be a number >= 0 or null"):
        ValidationConfig(min_mean_words="many")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="min_mean_words <= max_mean_words"):
        ValidationConfig(min_mean_words=5, max_mean_words=2)
