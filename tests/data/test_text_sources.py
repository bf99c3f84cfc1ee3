"""Text ingestion (sources ``text`` and ``text_table``), run for real on Tiny Shakespeare, SST-2 and small files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import needs_shared

from ssl_tasks.core.errors import UserError
from ssl_tasks.core.modality import modality_of, open_dataset
from ssl_tasks.data.ingest import ingest
from ssl_tasks.modalities.image.shards import ImageDataset
from ssl_tasks.modalities.text.shards import FORMAT, TextDataset, TextSplit, write_text_dataset

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
SHAKESPEARE = SHARED / "tiny_shakespeare" / "input.txt"
SST2 = SHARED / "sst2"
SST2_OPTIONS = {"test_file": "dev.tsv", "text_column": "sentence", "label_column": "label"}
needs_shakespeare = needs_shared(SHAKESPEARE, "shared Tiny Shakespeare")
needs_sst2 = needs_shared(SST2, "shared SST-2")


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def texts(out: Path, split: str) -> list[str]:
    return TextDataset(out).load(split)[0]


@pytest.fixture(scope="module")
def sst2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sst2") / "sst2"
    ingest("text_table", SST2, out, options=SST2_OPTIONS)
    return out


# --------------------------------------------------------------------------- Tiny Shakespeare


@needs_shakespeare
def test_shakespeare_paragraphs_are_the_speaker_turns(tmp_path: Path) -> None:
    out = tmp_path / "shakespeare"
    m = ingest("text", SHAKESPEARE, out, test_fraction=0.1, options={"unit": "paragraph"})
    assert m["format"] == FORMAT and m["modality"] == "text" and m["label_names"] == []
    train, test = m["splits"]["train"], m["splits"]["test"]
    assert train["count"] + test["count"] == 7222  # the README's speaker turns
    assert test["count"] == 722 and train["labeled"] == test["labeled"] == 0
    assert train["class_counts"] == [] and train["n_chars"] > 0
    src = m["source"]
    assert src["files_sha256"] == {"input.txt": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"}
    assert src["options"] == {"unit": "paragraph", "split": "random"} and src["texts_with_replacement_char"] == 0
    ds = TextDataset(out)
    ds.verify()
    tr, labels = ds.load("train")
    assert labels.dtype == np.int64 and (labels == -1).all()
    # The file is turns separated by blank lines (twice by two): every turn comes back verbatim.
    turns = [t.strip("\n") for t in SHAKESPEARE.read_text().split("\n\n") if t.strip()]
    assert len(turns) == 7222 and turns[0] == "First Citizen:\nBefore we proceed any further, hear me speak."
    assert sorted(tr + ds.load("test")[0]) == sorted(turns)
    assert train["n_chars"] + test["n_chars"] == sum(len(t) for t in turns)


@needs_shakespeare
def test_shakespeare_lines_and_tail_split(tmp_path: Path) -> None:
    lines = SHAKESPEARE.read_text().split("\n")
    assert len(lines) == 40001 and lines[-1] == ""  # 40,000 lines, newline-terminated
    nonblank = [line for line in lines if line.strip()]
    assert len(nonblank) == 32777  # 40,000 lines minus 7,223 blank ones
    m = ingest("text", SHAKESPEARE, tmp_path / "tail", test_fraction=0.1, options={"split": "tail"})
    assert m["source"]["options"] == {"unit": "line", "split": "tail"}
    assert (m["splits"]["train"]["count"], m["splits"]["test"]["count"]) == (29499, 3278)
    assert texts(tmp_path / "tail", "train") == nonblank[:29499]
    assert texts(tmp_path / "tail", "test") == nonblank[29499:]  # the final lines, in order
    # The default random split: same seed, same split; another seed, another split.
    ingest("text", SHAKESPEARE, tmp_path / "a", test_fraction=0.1)
    ingest("text", SHAKESPEARE, tmp_path / "b", test_fraction=0.1, split_seed=1)
    test_a = texts(tmp_path / "a", "test")
    assert len(test_a) == 3278 and test_a != nonblank[29499:]
    assert sorted(test_a + texts(tmp_path / "a", "train")) == sorted(nonblank)
    assert all_files(tmp_path / "a") != all_files(tmp_path / "b")


@needs_shakespeare
def test_shakespeare_ingest_twice_is_byte_identical(tmp_path: Path) -> None:
    a = ingest("text", SHAKESPEARE, tmp_path / "a", options={"unit": "paragraph"}, shard_size=1000)
    b = ingest("text", SHAKESPEARE, tmp_path / "b", options={"unit": "paragraph"}, shard_size=1000)
    assert a == b
    fa, fb = all_files(tmp_path / "a"), all_files(tmp_path / "b")
    assert len(fa) == 1 + 2 * (6 + 2)  # 5778 train and 1444 test texts in shards of 1000
    assert fa == fb


# --------------------------------------------------------------------------- SST-2


@needs_sst2
def test_sst2_folder_with_dev_as_test(sst2: Path) -> None:
    ds = TextDataset(sst2)
    ds.verify()
    m = ds.manifest
    assert ds.modality == "text" and ds.label_names == ["0", "1"] and ds.num_classes == 2
    assert sorted(ds.splits()) == ["test", "train"] and (ds.count("train"), ds.count("test")) == (67349, 872)
    assert m["splits"]["train"]["class_counts"] == [29780, 37569]  # per the README
    assert m["splits"]["test"]["class_counts"] == [428, 444]
    assert m["source"]["files"] == {"train": "train.tsv", "test": "dev.tsv"}
    assert m["source"]["split"] == "official"
    train, labels = ds.load("train")
    assert train[0] == "hide new secretions from the parental units"  # trailing space stripped
    assert labels[0] == 0 and labels.dtype == np.int64
    assert not any(t != t.strip() for t in train)
    assert sum(any(ord(c) > 127 for c in t) for t in train) == 438  # non-ASCII survives (README)
    assert len(set(train)) == 66978
    assert list(ds.iter_texts("test"))[:1] == ds.load("test")[0][:1]
    with pytest.raises(UserError, match=r"has no split 'dev'; splits: \["):
        ds.count("dev")


@needs_sst2
def test_sst2_default_test_file_has_no_labels(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(UserError) as ei:
        ingest("text_table", SST2, out, options={"text_column": "sentence", "label_column": "label"})
    assert str(ei.value) == (
        f"{SST2 / 'test.tsv'} has no column 'label' (option label_column); it has: index, sentence; "
        "test.tsv was picked as the test split by default: to use dev.tsv instead pass the option test_file=dev.tsv"
    )
    assert list(tmp_path.iterdir()) == []


@needs_sst2
def test_sst2_ingest_twice_is_byte_identical(sst2: Path, tmp_path: Path) -> None:
    m = ingest("text_table", SST2, tmp_path / "again", options=SST2_OPTIONS)
    assert m == TextDataset(sst2).manifest
    assert all_files(tmp_path / "again") == all_files(sst2)


@needs_sst2
def test_cli_ingest_with_options(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "ssl-tasks"
    out = tmp_path / "sst2"
    args = [str(exe), "ingest", "--source", "text_table", "--path", str(SST2), "--option", "test_file=dev.tsv",
            "--option", "text_column=sentence", "--option", "label_column=label", "--out", str(out)]
    res = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"wrote {out}: train=67349, test=872"
    assert TextDataset(out).manifest["source"]["options"] == SST2_OPTIONS
    for bad, message in (("test_file", "expected KEY=VALUE"), ("unit=[", "the value is not valid YAML")):
        res = subprocess.run([*args[:-1], str(tmp_path / "bad"), "--option", bad], capture_output=True, text=True)
        assert res.returncode == 2
        assert res.stderr.startswith(f"error: --option {bad!r}: {message}") and res.stderr.count("\n") == 1
        assert "Traceback" not in res.stderr and not (tmp_path / "bad").exists()


# --------------------------------------------------------------------------- small tables


def test_jsonl_table_labels_unicode_and_stratified_split(tmp_path: Path) -> None:
    rows = [{"text": f"  text {i} caf\u00e9\u2028second\nline  ", "y": [10, 2, 1][i % 3]} for i in range(30)]
    rows[4]["y"] = "2"  # a string and an int with the same value are one label
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    m = ingest("text_table", path, tmp_path / "out", test_fraction=0.2, options={"label_column": "y"})
    assert m["label_names"] == ["1", "2", "10"]  # numeric order, not lexicographic
    assert m["splits"]["test"]["class_counts"] == [2, 2, 2] and m["splits"]["train"]["class_counts"] == [8, 8, 8]
    assert m["source"]["split"] == "stratified" and m["source"]["format"] == "jsonl"
    tr, labels = TextDataset(tmp_path / "out").load("train")
    assert tr[0] == "text 0 caf\u00e9\u2028second\nline" and labels[0] == 2  # label 10
    # One JSON string per physical line, even with newlines and U+2028 in the text.
    shard = (tmp_path / "out" / "train" / "shard-00000.texts.jsonl").read_bytes()
    assert shard.count(b"\n") == 24 and "caf\u00e9".encode() in shard


def test_csv_with_quoted_comma_and_string_labels(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    body = "".join(f'"good, really {i}",pos\nbad {i},neg\n' for i in range(5))
    path.write_text("text,sentiment\n" + body)
    m = ingest("text_table", path, tmp_path / "out", test_fraction=0.2, options={"label_column": "sentiment"})
    assert m["label_names"] == ["neg", "pos"]
    ds = TextDataset(tmp_path / "out")
    both = ds.load("train")[0] + ds.load("test")[0]
    assert sorted(both) == sorted([f"good, really {i}" for i in range(5)] + [f"bad {i}" for i in range(5)])
    # Unlabeled: no label column, labels all -1, a plain random split.
    m = ingest("text_table", path, tmp_path / "unlabeled", test_fraction=0.2)
    assert m["label_names"] == [] and m["source"]["split"] == "random"
    assert (TextDataset(tmp_path / "unlabeled").load("test")[1] == -1).all()


def test_text_folder_and_file_units(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "b.txt").write_bytes(b"second file\r\nwith CRLF\r\n")
    (folder / "a.txt").write_text("first file\n\n  \nsecond paragraph\n")
    (folder / "notes.md").write_text("ignored")
    m = ingest("text", folder, tmp_path / "out", test_fraction=0.5, options={"unit": "file", "split": "tail"})
    assert texts(tmp_path / "out", "train") == ["first file\n\n  \nsecond paragraph"]
    assert texts(tmp_path / "out", "test") == ["second file\nwith CRLF"]
    assert sorted(m["source"]["files_sha256"]) == ["a.txt", "b.txt"]
    ingest("text", folder, tmp_path / "lines", test_fraction=0.25, options={"split": "tail"})
    assert texts(tmp_path / "lines", "test") == ["with CRLF"]
    assert texts(tmp_path / "lines", "train") == ["first file", "second paragraph", "second file"]


def test_undecodable_bytes_are_kept_as_replacement_chars(tmp_path: Path) -> None:
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"fine line\nbad \xff\xfe bytes\n" + b"ok\n" * 8)
    m = ingest("text", path, tmp_path / "out", test_fraction=0.1, options={"split": "tail"})
    assert m["source"]["texts_with_replacement_char"] == 1
    assert texts(tmp_path / "out", "train")[1] == "bad \ufffd\ufffd bytes"


def test_existing_datasets_are_replaced_by_text(tmp_path: Path, digits_dataset: Path) -> None:
    out = tmp_path / "ds"
    path = tmp_path / "t.txt"
    path.write_text("".join(f"line {i}\n" for i in range(10)))
    ingest("sklearn_digits", None, out)
    assert modality_of(out).name == "image" and isinstance(open_dataset(out), ImageDataset)
    ingest("text", path, out)
    assert modality_of(out).name == "text" and isinstance(open_dataset(out), TextDataset)
    path.write_text("other\n" * 10)
    ingest("text", path, out)  # a text dataset is replaceable too
    assert set(texts(out, "train")) == {"other"}
    assert [p.name for p in tmp_path.iterdir()] == ["ds", "t.txt"]  # no temp leftovers
    assert open_dataset(digits_dataset).modality == "image"


def test_text_dataset_verify_and_bad_manifests(tmp_path: Path) -> None:
    splits = {"train": TextSplit(["a", "b", "c"], np.array([0, 1, 0])), "test": TextSplit(["d"], np.array([1]))}
    m = write_text_dataset(tmp_path / "ds", splits, label_names=["x", "y"], source={"name": "synthetic"}, shard_size=2)
    assert m["splits"]["train"]["n_chars"] == 3 and len(m["splits"]["train"]["shards"]) == 2
    ds = TextDataset(tmp_path / "ds")
    ds.verify()
    assert ds.load("train")[0] == list(ds.iter_texts("train")) == ["a", "b", "c"]
    (tmp_path / "ds" / "train" / "shard-00001.texts.jsonl").write_text('"C"\n')
    with pytest.raises(UserError, match="shard-00001.texts.jsonl does not match the sha256"):
        ds.verify()
    (tmp_path / "ds" / "test" / "shard-00000.labels.npy").write_bytes(b"not a label file")
    assert list(ds.iter_texts("test")) == ["d"]  # texts stream without the label files
    with pytest.raises(UserError, match="cannot read shard .*shard-00000.labels.npy"):
        ds.load("test")
    with pytest.raises(UserError, match="not an ingested dataset"):
        open_dataset(tmp_path / "nowhere")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text('{"format": "mystery/v9"}')
    with pytest.raises(UserError, match=r"bad/manifest.json: unknown dataset format 'mystery/v9'; known: "):
        modality_of(tmp_path / "bad").name
    with pytest.raises(UserError, match="unsupported format 'mystery/v9'"):
        TextDataset(tmp_path / "bad")
    with pytest.raises(UserError, match="is empty: no texts found"):
        write_text_dataset(tmp_path / "empty", {"train": TextSplit([], np.zeros(0))}, label_names=[], source={})
    assert not (tmp_path / "empty").exists()


# --------------------------------------------------------------------------- user errors


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / "in" / name
    p.parent.mkdir(exist_ok=True)
    p.write_bytes(content.encode() if isinstance(content, str) else content)
    return p


@pytest.mark.parametrize(
    "source,name,content,options,message",
    [
        ("text", "a.txt", "x\ny\n", {"units": "line"}, "source 'text': unknown option 'units'; valid: split, unit"),
        ("text", "a.txt", "x\ny\n", {"unit": "word"}, "option unit must be one of line, paragraph, file; got 'word'"),
        ("text_table", "a.tsv", "text\nx\n", {"label": "y"},
         "source 'text_table': unknown option 'label'; valid: label_column, test_file, text_column"),
        ("text_table", "a.xlsx", "x", {}, "unsupported table extension '.xlsx'; source 'text_table' reads .tsv, .csv"),
        ("text", "a.csv", "x", {}, "source 'text' reads .txt files"),
        ("text_table", "a.tsv", "sentence\tlabel\nx\t0\n", {},
         "a.tsv has no column 'text' (option text_column); it has: sentence, label"),
        ("text_table", "a.jsonl", '{"text": "x"}\n{"txt": "y"}\n', {},
         "a.jsonl:2 has no key 'text' (option text_column); it has: txt"),
        ("text_table", "a.jsonl", '{"text": "x"}\n\n{"text": "y"\n', {}, "a.jsonl:3: not a JSON object"),
        ("text_table", "a.jsonl", '{"text": "x"}\n["y"]\n', {}, "a.jsonl:2: expected a JSON object, got list"),
        ("text_table", "a.tsv", "text\tlabel\nx\t0\ny\t\n", {"label_column": "label"},
         "a.tsv:3: empty label in 'label'"),
        ("text_table", "a.tsv", "text\tlabel\nx\t0\ty\n", {"label_column": "label"},
         "a.tsv:2: 3 fields but the header has 2"),
        ("text_table", "a.tsv", "", {}, "a.tsv is empty: no header row"),
        ("text_table", "a.csv", "text\n", {}, "a.csv is empty: no rows"),
        ("text", "a.txt", "\n  \n\n", {}, "a.txt is empty: no texts found (unit=line)"),
        ("text_table", "a.tsv", "text\nx\n", {"test_file": "b.tsv"}, "option test_file needs a folder"),
        ("idx", "a.txt", "x", {"unit": "line"}, "source 'idx' takes no options; got unit"),
    ],
)
def test_bad_input_is_a_readable_user_error(
    tmp_path: Path, source: str, name: str, content: str, options: dict, message: str
) -> None:
    path = _write(tmp_path, name, content)
    out = tmp_path / "out"
    with pytest.raises(UserError) as ei:
        ingest(source, path, out, options=options)
    assert message in str(ei.value) and "\n" not in str(ei.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no output, no temp leftovers


def test_bad_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .txt files in folder"):
        ingest("text", tmp_path / "empty", tmp_path / "out")
    with pytest.raises(UserError, match=r"no train.tsv, train.csv, train.jsonl in the folder"):
        ingest("text_table", tmp_path / "empty", tmp_path / "out")
    (tmp_path / "empty" / "train.csv").write_text("text\nx\n")
    with pytest.raises(UserError, match="found train.csv but no test.csv, dev.csv, validation.csv; name the test"):
        ingest("text_table", tmp_path / "empty", tmp_path / "out")
    with pytest.raises(UserError, match="test_file 'dev.csv' not found in"):
        ingest("text_table", tmp_path / "empty", tmp_path / "out", options={"test_file": "dev.csv"})
    (tmp_path / "empty" / "validation.csv").write_text("text\n")
    with pytest.raises(UserError, match="validation.csv is empty: no rows"):
        ingest("text_table", tmp_path / "empty", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]
