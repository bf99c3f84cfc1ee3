"""The image-caption suite of the GX validation stage, run for real on Open Clip Art and small derived inputs."""

from __future__ import annotations

import csv
import io
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CLIPART, CLIPART_OPTIONS
from helpers import validation_failure

from ssl_tasks.core.errors import UserError
from ssl_tasks.data.ingest import ingest
from ssl_tasks.modalities.image_text.checks import build_pair_tables
from ssl_tasks.modalities.image_text.shards import PairDataset, PairRecord, PairSplit, write_pair_dataset
from ssl_tasks.validation import ValidationConfig, validate_dataset

OPENCLIPART = CLIPART
OPTIONS = {**CLIPART_OPTIONS, "image_size": 32}
ERROR = "expect_column_values_to_be_null(error is null: every image exists, decodes and lies inside the dataset root)"
PATH = "expect_column_values_to_not_match_regex(image path is relative and has no '..' part)"
N_CAPTIONS = "expect_column_values_to_be_between(n_captions >= 1: every image has a caption)"
BLANK = "expect_column_values_to_be_in_set(blank == False: no empty or whitespace-only captions)"
N_CHARS = "expect_column_values_to_be_between(caption n_chars in [1, 20000])"
PAIRS = ("expect_column_values_to_be_in_set(pair_in_train == False: at most 0 non-train captions repeat a train "
         "(image bytes, caption) pair)")
IMAGES = "expect_column_values_to_be_in_set(in_train == False: at most 0 non-train rows duplicate a train image)"


fail = validation_failure


def openclipart_rows() -> list[dict[str, str]]:
    with open(OPENCLIPART / "captions.tsv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def subset(folder: Path, rows: list[dict[str, str]], extra: str = "") -> Path:
    """Copy the images of ``rows`` under ``folder`` and write their TSV (plus ``extra`` raw lines)."""
    cols = ["filepath", "title", "keywords", "category"]
    for r in rows:
        dest = folder / r["filepath"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((OPENCLIPART / r["filepath"]).read_bytes())
    table = folder / "captions.tsv"
    lines = ["\t".join(cols)] + ["\t".join(r[c] for c in cols) for r in rows]
    table.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return table


def ids_by_image(ds: Path) -> dict[str, str]:
    """Stored image path -> the sample id the suite reports (``<split>/<index>:<path>``)."""
    d = PairDataset(ds)
    return {r.image: f"{split}/{i:06d}:{r.image}" for split in d.splits() for i, r in enumerate(d.records(split))}


@pytest.mark.slow
def test_full_openclipart_passes_the_defaults(tmp_path: Path) -> None:
    """All 1,422 images, two captions each (title, keywords), 22 top-level categories: the suite passes.

    With ``pair_class_balance`` on and the class band set, its bounds fail it: the topic imbalance is real
    (signs_and_symbols 577 of 1,422; buttons and decorations 2 each), which is why that check is off
    by default for image-caption data.
    """
    ds = tmp_path / "openclipart"
    t0 = time.perf_counter()
    m = ingest("image_text_table", OPENCLIPART / "captions.tsv", ds, options=OPTIONS)
    t1 = time.perf_counter()
    report = validate_dataset(ds, tmp_path / "report.json", docs_dir=tmp_path / "docs")
    t2 = time.perf_counter()
    print(f"openclipart at 32 px: ingest {t1 - t0:.1f} s, validate {t2 - t1:.1f} s")
    assert t2 - t0 < 60
    assert report["success"], report
    assert m["source"]["num_images"] == 1422 and m["source"]["num_captions"] == 2844 and len(m["label_names"]) == 22
    assert m["source"]["images_with_errors"] == 0
    assert report["n_samples"] == {"train": 1136, "test": 286} and report["n_captions"] == {"train": 2272, "test": 572}
    assert report["n_expectations"] == 16 and report["cross_split_duplicates"] == 0
    names = [e["name"] for e in report["expectations"]]
    assert {ERROR, PATH, N_CAPTIONS, BLANK, N_CHARS, PAIRS, IMAGES} <= set(names)
    assert "expect_table_row_count_to_equal(row count == manifest total n_captions 2844)" in names
    assert "expect_column_values_to_be_in_set(label in {0..21})" in names
    assert not any("class fraction" in n for n in names)
    index = (tmp_path / "docs" / "index.html").read_text()
    assert "ssl_tasks_samples" in index and "ssl_tasks_captions" in index

    # set explicitly, the class band fails it (left unset it would only warn: docs/your-data.md)
    _, failed = fail(ds, tmp_path, config=ValidationConfig(pair_class_balance=True, min_class_fraction=0.5,
                                                           max_class_fraction=2.0))
    (entry,) = failed.values()
    assert entry["name"] == "expect_column_values_to_be_between(class fraction of split in [0.02273, 0.09091])"
    k = m["label_names"].index("signs_and_symbols")
    assert entry["unexpected_count"] > 0
    counts = build_pair_tables(PairDataset(ds)).class_counts.set_index("id")
    assert counts.loc["train/class=signs_and_symbols", "label"] == k
    assert counts.loc["train/class=signs_and_symbols", "fraction"] == pytest.approx(462 / 1136)  # 577 - round(577 * 0.2)


def test_bad_rows_ingest_but_fail_naming_the_rows(tmp_path: Path) -> None:
    """Missing, truncated, garbage and escaping images, and an empty caption column: each fails a named check."""
    rows = [dict(r) for r in openclipart_rows()[::36][:40]]
    folder = tmp_path / "data"
    png = (OPENCLIPART / rows[0]["filepath"]).read_bytes()
    (tmp_path / "outside.png").write_bytes(png)  # a real image just outside the dataset root
    bad = ["images/missing.png", "images/truncated.png", "images/garbage.png", "../outside.png", "images/link.png"]
    rows[5]["keywords"] = ""  # an empty caption cell
    table = subset(folder, rows, "".join(f"{p}\t{p.split('/')[-1]} drawing\tkw\tfood/x\n" for p in bad))
    (folder / "images" / "truncated.png").write_bytes(png[:2000])
    (folder / "images" / "garbage.png").write_bytes(b"GIF89a? no." * 30)
    (folder / "images" / "link.png").symlink_to(tmp_path / "outside.png")
    ds = tmp_path / "ds"
    m = ingest("image_text_table", table, ds, options=OPTIONS)  # bad rows do not stop the ingest
    assert m["source"]["images_with_errors"] == 5
    ids = ids_by_image(ds)
    records = {r.image: r for s in PairDataset(ds).splits() for r in PairDataset(ds).records(s)}
    assert records["../outside.png"].sha256 is None  # never opened

    msg, failed = fail(ds, tmp_path, config=ValidationConfig(sample_rows=10))
    assert set(failed) == {ERROR, PATH, BLANK, N_CHARS}
    err = failed[ERROR]
    assert err["unexpected_count"] == 5 and sorted(err["sample_ids"]) == sorted(ids[p] for p in bad)
    reasons = dict(zip(err["sample_ids"], err["sample_details"], strict=True))
    assert reasons[ids["images/missing.png"]] == "missing image file images/missing.png"
    assert reasons[ids["images/truncated.png"]].startswith("image does not decode: OSError")
    assert reasons[ids["images/garbage.png"]].startswith("image does not decode: UnidentifiedImageError")
    assert reasons[ids["../outside.png"]] == "path escapes the dataset root: ../outside.png"
    assert reasons[ids["images/link.png"]] == "path escapes the dataset root (through a symlink): images/link.png"
    assert f"{ids['../outside.png']} (path escapes the dataset root: ../outside.png)" in msg
    assert f"{ids['images/missing.png']} (missing image file images/missing.png)" in msg
    # The stored path itself is flagged, whatever ingest recorded.
    assert failed[PATH]["sample_ids"] == [ids["../outside.png"]] and f"{PATH}: 1 rows, e.g. {ids['../outside.png']}" in msg
    blank_id = f"{ids[rows[5]['filepath']]}#1"  # the second caption (keywords) of that image
    assert failed[BLANK]["sample_ids"] == [blank_id] and f"{BLANK}: 1 rows, e.g. {blank_id}" in msg
    assert rows[5]["filepath"] in msg


def test_tar_bad_members_fail_validation(tmp_path: Path) -> None:
    rows = openclipart_rows()[::200][:6]
    members = []
    for i, r in enumerate(rows):
        members += [(f"s/{i:03d}.png", (OPENCLIPART / r["filepath"]).read_bytes()), (f"s/{i:03d}.txt", r["title"].encode())]
    members += [("s/100.txt", b"orphan caption\n"), ("s/101.png", members[0][1]), ("../up.png", members[0][1])]
    tar = tmp_path / "in.tar"
    with tarfile.open(tar, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    ds = tmp_path / "ds"
    ingest("image_text_tar", tar, ds, test_fraction=0.3, options={"image_size": 16})
    ids = ids_by_image(ds)
    msg, failed = fail(ds, tmp_path)
    assert set(failed) == {ERROR, PATH, BLANK, N_CHARS}
    assert sorted(failed[ERROR]["sample_ids"]) == sorted([ids["s/100"], ids["../up.png"]])
    assert f"{ids['s/100']} (missing image)" in msg
    assert failed[PATH]["sample_ids"] == [ids["../up.png"]]
    # No .txt: one empty caption (s/101.png), and the escaping key's captions are never read.
    assert sorted(failed[BLANK]["sample_ids"]) == sorted([f"{ids['s/101.png']}#0", f"{ids['../up.png']}#0"])


def synthetic(tmp_path: Path, train: list[PairRecord], test: list[PairRecord], name: str = "ds") -> Path:
    def split(records: list[PairRecord]) -> PairSplit:
        n = len(records)
        images = np.arange(n * 3 * 8 * 8, dtype=np.int64).reshape(n, 3, 8, 8).astype(np.uint8)
        return PairSplit(images, records, np.full(n, -1))

    out = tmp_path / name
    write_pair_dataset(out, {"train": split(train), "test": split(test)}, image_shape=(3, 8, 8), label_names=[],
                       source={"name": "synthetic"})
    return out


def rec(image: str, sha: str, *captions: str) -> PairRecord:
    return PairRecord(tuple(captions), image, sha, None)


def test_pair_repeated_across_splits_fails(tmp_path: Path) -> None:
    train = [rec("a.png", "aa", "a red apple", "fruit"), rec("b.png", "bb", "a blue bird")]
    # c.png has a's bytes under another name: its "fruit" caption repeats a train pair, "green" does not.
    test = [rec("c.png", "aa", "green", "fruit"), rec("d.png", "dd", "a blue bird")]
    ds = synthetic(tmp_path, train, test)
    msg, failed = fail(ds, tmp_path, config=ValidationConfig(max_cross_split_duplicates=0))  # set: enforced
    assert set(failed) == {PAIRS, IMAGES}
    assert failed[PAIRS]["sample_ids"] == ["test/000000:c.png#1"]  # d.png: same caption, other image: fine
    assert failed[IMAGES]["sample_ids"] == ["test/000000:c.png"]
    assert f"{PAIRS}: 1 rows, e.g. test/000000:c.png#1" in msg
    ok = validate_dataset(ds, tmp_path / "r.json", config=ValidationConfig(max_cross_split_duplicates=1))
    assert ok["success"] and ok["metrics"]["cross_split_duplicate_pairs"] == 1


def test_tables_and_caption_bounds(tmp_path: Path) -> None:
    train = [rec("x/a.png", "aa", "one", "two words"), rec("b.png", "bb"), rec("c.png", "cc", "caf\ufffd", "x" * 50)]
    test = [PairRecord(("fine",), "d.png", None, "missing image file d.png")]
    ds = synthetic(tmp_path, train, test)
    t = build_pair_tables(PairDataset(ds))
    s = t.samples.set_index("id")  # splits in manifest order (sorted: test first)
    assert list(s.index) == ["test/000000:d.png", "train/000000:x/a.png", "train/000001:b.png", "train/000002:c.png"]
    assert s["n_captions"].tolist() == [1, 2, 0, 2] and s["shape"].unique().tolist() == ["3x8x8"]
    assert s.loc["test/000000:d.png", "error"] == "missing image file d.png" and s["error"].isna().sum() == 3
    c = t.captions.set_index("id")
    assert list(c.index) == ["test/000000:d.png#0", "train/000000:x/a.png#0", "train/000000:x/a.png#1",
                             "train/000002:c.png#0", "train/000002:c.png#1"]
    assert c["n_chars"].tolist() == [4, 3, 9, 4, 50] and c["pair_key"].isna().tolist() == [True] + [False] * 4
    msg, failed = fail(ds, tmp_path, config=ValidationConfig(max_chars=20))
    assert failed[N_CAPTIONS]["sample_ids"] == ["train/000001:b.png"]
    assert failed["expect_column_values_to_be_between(caption n_chars in [1, 20])"]["sample_ids"] == [
        "train/000002:c.png#1"]
    assert failed["expect_column_values_to_be_in_set(decode_error == False: captions decode as UTF-8)"][
        "sample_ids"] == ["train/000002:c.png#0"]
    assert failed[ERROR]["sample_ids"] == ["test/000000:d.png"] and "(missing image file d.png)" in msg


def test_config_rejects_a_non_bool_class_balance_flag() -> None:
    with pytest.raises(UserError, match="pair_class_balance must be true or false"):
        ValidationConfig(pair_class_balance="yes")  # type: ignore[arg-type]
