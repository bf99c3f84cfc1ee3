"""Image-caption ingestion (sources ``image_text_table`` and ``image_text_tar``), run for real on Open Clip Art."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import CLIPART, CLIPART_OPTIONS
from PIL import Image

from ssl_tasks.core.errors import UserError
from ssl_tasks.core.modality import modality_of, open_dataset
from ssl_tasks.data.ingest import SOURCES, ingest
from ssl_tasks.data.sources import takes_options
from ssl_tasks.modalities.image.shards import ImageDataset
from ssl_tasks.modalities.image_text.shards import (
    FORMAT,
    PairDataset,
    PairRecord,
    PairSplit,
    unsafe_path,
    write_pair_dataset,
)
from ssl_tasks.modalities.image_text.sources import render
from ssl_tasks.pipeline.params import DatasetParams

REPO = Path(__file__).resolve().parents[2]
OPENCLIPART = CLIPART
OPTIONS = {**CLIPART_OPTIONS, "image_size": 32}


def openclipart_rows() -> list[dict[str, str]]:
    with open(OPENCLIPART / "captions.tsv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def subset(folder: Path, rows: list[dict[str, str]], extra: str = "") -> Path:
    """Copy the images of ``rows`` under ``folder`` and write their TSV (plus ``extra`` raw lines)."""
    cols = ["filepath", "title", "keywords", "category", "sha256"]
    lines = ["\t".join(cols)] + ["\t".join(r[c] for c in cols) for r in rows]
    for r in rows:
        dest = folder / r["filepath"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((OPENCLIPART / r["filepath"]).read_bytes())
    table = folder / "captions.tsv"
    table.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return table


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def rows41() -> list[dict[str, str]]:
    return openclipart_rows()[::35]  # 41 images from 16 top-level categories


@pytest.fixture(scope="module")
def table41(tmp_path_factory: pytest.TempPathFactory, rows41: list[dict[str, str]]) -> Path:
    return subset(tmp_path_factory.mktemp("oc41") / "in", rows41)


@pytest.fixture(scope="module")
def ds41(tmp_path_factory: pytest.TempPathFactory, table41: Path) -> Path:
    out = tmp_path_factory.mktemp("oc41_out") / "ds"
    ingest("image_text_table", table41, out, options=OPTIONS)
    return out


# --------------------------------------------------------------------------- registration


def test_sources_are_registered_as_the_image_text_modality() -> None:
    for name in ("image_text_table", "image_text_tar"):
        fn = SOURCES.get(name)
        assert takes_options(fn) and fn.modality == "image_text"
        assert DatasetParams(source=name).modality == "image_text"
    assert SOURCES.get("text_table").modality == "text"  # the generic marker keeps text sources
    assert DatasetParams(source="image_folder").modality == "image"


# --------------------------------------------------------------------------- the table source


def test_table_subset_shapes_captions_labels_and_split(ds41: Path, rows41: list[dict[str, str]]) -> None:
    m = json.loads((ds41 / "manifest.json").read_text())
    assert m["format"] == FORMAT and m["modality"] == "image_text"
    assert m["image_shape"] == [3, 32, 32] and m["dtype"] == "uint8" and m["value_range"] == [0, 255]
    tops = sorted({r["category"].split("/")[0] for r in rows41})
    assert m["label_names"] == tops and len(tops) == 16
    assert modality_of(ds41).name == "image_text" and isinstance(open_dataset(ds41), PairDataset)
    src = m["source"]
    assert src["num_rows"] == src["num_images"] == 41 and src["num_captions"] == 82
    assert src["images_with_errors"] == src["rows_with_errors"] == 0 and src["split"] == "stratified"
    assert src["options"]["caption_column"] == ["title", "keywords"] and src["options"]["background"] == "white"

    ds = PairDataset(ds41)
    ds.verify()
    by_path = {r["filepath"]: r for r in rows41}
    seen: dict[str, list[str]] = {}
    for split in ("train", "test"):
        images, labels = ds.load(split)
        records = ds.records(split)
        assert images.shape == (len(records), 3, 32, 32) and images.dtype == np.uint8
        assert labels.dtype == np.int64 and len(labels) == len(records)
        assert m["splits"][split]["n_captions"] == 2 * len(records)
        for img, lab, rec in zip(images, labels, records, strict=True):
            row = by_path[rec.image]
            assert rec.captions == (row["title"], row["keywords"].replace("|", " ")) and rec.error is None
            assert rec.sha256 == row["sha256"]  # the TSV's own digest of the PNG
            assert m["label_names"][lab] == row["category"].split("/")[0]  # label_depth=1
            assert img.max() > 0
        seen[split] = [r.image for r in records]
        assert ds.captions(split) == [list(r.captions) for r in records]
        assert list(ds.iter_texts(split)) == [c for r in records for c in r.captions]
    assert not set(seen["train"]) & set(seen["test"])  # split by image
    assert sorted(seen["train"] + seen["test"]) == sorted(by_path)
    # Stratified: each class gives round(n * 0.2) of its images to test.
    for k, name in enumerate(m["label_names"]):
        n = sum(r["category"].split("/")[0] == name for r in rows41)
        assert m["splits"]["test"]["class_counts"][k] == int(np.floor(n * 0.2 + 0.5))


def test_table_sha256_and_byte_identical_reingest(ds41: Path, table41: Path, tmp_path: Path) -> None:
    m = json.loads((ds41 / "manifest.json").read_text())
    assert m["source"]["table_sha256"] == hashlib.sha256(table41.read_bytes()).hexdigest()
    again = tmp_path / "again"
    ingest("image_text_table", table41, again, options=OPTIONS)
    assert all_files(again) == all_files(ds41)
    lines = (ds41 / "train" / "shard-00000.pairs.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines[0] == json.dumps(json.loads(lines[0]), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    other = ingest("image_text_table", table41, tmp_path / "seed1", split_seed=1, options=OPTIONS)
    assert PairDataset(tmp_path / "seed1").records("test") != PairDataset(ds41).records("test")
    assert other["splits"]["test"]["count"] == m["splits"]["test"]["count"]  # same stratified sizes


def test_transparent_clip_art_is_composited_on_the_background(tmp_path: Path, rows41: list[dict[str, str]]) -> None:
    row = rows41[0]  # aquila_frontale: RGBA, 280x133, transparent corners whose RGB is black
    with Image.open(OPENCLIPART / row["filepath"]) as im:
        rgba = np.asarray(im)
        assert im.mode == "RGBA" and rgba[0, 0].tolist() == [0, 0, 0, 0]
        naive = np.asarray(im.convert("RGB").resize((32, 32)))
    assert naive[0, 0].tolist() == [0, 0, 0]  # what ignoring alpha would store
    table = subset(tmp_path / "in", rows41[:6])
    for background, value in (("white", 255), ("black", 0)):
        out = tmp_path / background
        ingest("image_text_table", table, out, options={**OPTIONS, "background": background})
        ds = PairDataset(out)
        for split in ("train", "test"):
            for img, rec in zip(ds.load(split)[0], ds.records(split), strict=True):
                if rec.image == row["filepath"]:
                    assert img[:, 0, 0].tolist() == [value] * 3  # corner: padding / transparent pixels
                    # 280x133 is padded to 280x280 and centred: the top rows are background only.
                    assert (img[:, :4] == value).all() and not (img[:, 16] == value).all()
    # render is the function both sources use; the stored image is exactly it.
    data = (OPENCLIPART / row["filepath"]).read_bytes()
    assert render(data, 32, (255, 255, 255)).shape == (3, 32, 32)


def test_rows_of_one_image_merge_into_several_captions(tmp_path: Path, rows41: list[dict[str, str]]) -> None:
    a, b, c = (r["filepath"] for r in rows41[:3])
    folder = tmp_path / "in"
    subset(folder, rows41[:3])
    table = folder / "pairs.csv"
    table.write_text(
        f"image,caption,topic\n{a},first of a,x\n{b},only b,y\n./{a},\"second, of a\",x\n{c},c,y\n{a},  third of a ,x\n",
        encoding="utf-8",
    )
    m = ingest("image_text_table", table, tmp_path / "out", test_fraction=0.34, options={"label_column": "topic"})
    assert m["source"]["num_rows"] == 5 and m["source"]["num_images"] == 3 and m["source"]["num_captions"] == 5
    ds = PairDataset(tmp_path / "out")
    records = {r.image: r for split in ds.splits() for r in ds.records(split)}
    assert records[a].captions == ("first of a", "second, of a", "third of a")  # row order, ./ normalised
    assert records[b].captions == ("only b",) and m["label_names"] == ["x", "y"]
    (conflict := folder / "conflict.csv").write_text(f"image,caption,topic\n{a},one,x\n{b},two,y\n{a},three,y\n")
    with pytest.raises(UserError, match=r"conflict\.csv:4: image .* has label 'y' here but 'x' at .*conflict\.csv:2"):
        ingest("image_text_table", conflict, tmp_path / "bad", options={"label_column": "topic"})
    assert not (tmp_path / "bad").exists()


def test_jsonl_table_with_a_root_and_list_captions(tmp_path: Path, rows41: list[dict[str, str]]) -> None:
    subset(tmp_path / "pics", rows41[:4])
    table = tmp_path / "meta" / "pairs.jsonl"
    table.parent.mkdir()
    table.write_text("".join(json.dumps({"image": r["filepath"], "caption": [r["title"], "clip art"]}) + "\n"
                             for r in rows41[:4]), encoding="utf-8")
    m = ingest("image_text_table", table, tmp_path / "out", test_fraction=0.25, options={"root": "../pics"})
    assert m["label_names"] == [] and m["source"]["split"] == "random" and m["source"]["options"]["root"] == "../pics"
    ds = PairDataset(tmp_path / "out")
    recs = ds.records("train") + ds.records("test")
    assert sorted(r.captions for r in recs) == sorted((r["title"], "clip art") for r in rows41[:4])
    assert all(r.error is None for r in recs) and (ds.load("test")[1] == -1).all()


def test_bad_rows_are_recorded_with_zero_images(tmp_path: Path, rows41: list[dict[str, str]]) -> None:
    """Missing, broken and escaping images are kept as errors; the file outside the root is never read."""
    folder = tmp_path / "in"
    good = rows41[:8]
    png = (OPENCLIPART / good[0]["filepath"]).read_bytes()
    (tmp_path / "outside.png").write_bytes(png)  # a real image, right next to the dataset root
    bad = ["images/missing.png", "images/truncated.png", "images/garbage.png", "../outside.png", "images/link.png"]
    table = subset(folder, good, "".join(f"{p}\t{p} title\tkw\tfood/x\t-\n" for p in bad))
    (folder / "images" / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "images" / "garbage.png").write_bytes(b"definitely not a png\x00" * 10)
    (folder / "images" / "link.png").symlink_to(tmp_path / "outside.png")
    m = ingest("image_text_table", table, tmp_path / "out", options=OPTIONS)
    assert m["source"]["images_with_errors"] == m["source"]["rows_with_errors"] == 5
    ds = PairDataset(tmp_path / "out")
    got = {}
    for split in ds.splits():
        for img, rec in zip(ds.load(split)[0], ds.records(split), strict=True):
            got[rec.image] = (rec, img)
    expect = {
        "images/missing.png": "missing image file images/missing.png",
        "images/truncated.png": "image does not decode: ",
        "images/garbage.png": "image does not decode: UnidentifiedImageError",
        "../outside.png": "path escapes the dataset root: ../outside.png",
        "images/link.png": "path escapes the dataset root (through a symlink): images/link.png",
    }
    for path, reason in expect.items():
        rec, img = got[path]
        assert rec.error is not None and rec.error.startswith(reason), rec.error
        assert not img.any() and len(rec.captions) == 2
    for path in ("../outside.png", "images/link.png", "images/missing.png"):
        assert got[path][0].sha256 is None  # never opened
    assert got["images/truncated.png"][0].sha256 == hashlib.sha256(png[: len(png) // 2]).hexdigest()
    assert unsafe_path("../outside.png") and not unsafe_path("images/link.png")


def test_empty_caption_cells_are_kept(tmp_path: Path, rows41: list[dict[str, str]]) -> None:
    rows = [dict(r) for r in rows41[:5]]
    rows[2]["keywords"] = ""
    rows[3]["keywords"] = "| |"  # only separators: empty too
    table = subset(tmp_path / "in", rows)
    ingest("image_text_table", table, tmp_path / "out", options=OPTIONS)
    ds = PairDataset(tmp_path / "out")
    caps = {r.image: r.captions for s in ds.splits() for r in ds.records(s)}
    assert caps[rows[2]["filepath"]] == (rows[2]["title"], "") and caps[rows[3]["filepath"]][1] == ""


# --------------------------------------------------------------------------- structural errors


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({**OPTIONS, "caption_column": ["title", "summary"]},
         r"captions\.tsv has no column 'summary' \(option caption_column\); it has: filepath, title, keywords"),
        ({**OPTIONS, "image_column": "image"}, r"has no column 'image' \(option image_column\)"),
        ({**OPTIONS, "colour": "white"}, r"unknown option 'colour'; valid: background, caption_column"),
        ({**OPTIONS, "image_size": 4}, r"image_size must be an integer in 8\.\.1024; got 4"),
        ({**OPTIONS, "image_size": True}, r"image_size must be an integer"),
        ({**OPTIONS, "background": "red"}, r"background must be one of white, black; got 'red'"),
        ({**OPTIONS, "label_depth": 0}, r"label_depth must be an integer >= 1"),
        ({**OPTIONS, "label_column": None}, r"label_depth=1 needs a label_column"),
        ({**OPTIONS, "caption_column": []}, r"caption_column must name at least one column"),
        ({**OPTIONS, "caption_column": ["title", "title"]}, r"caption_column lists 'title' twice"),
        ({**OPTIONS, "caption_column": "filepath"}, r"caption_column and image_column both name 'filepath'"),
        ({**OPTIONS, "caption_separator": ""}, r"caption_separator must be a non-empty string"),
        ({**OPTIONS, "root": "nowhere"}, r"option root 'nowhere' is not a folder"),
    ],
)
def test_bad_options_and_columns_raise_before_writing(table41: Path, tmp_path: Path, options: dict, match: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(UserError, match=match):
        ingest("image_text_table", table41, out, options=options)
    assert not out.exists()


def test_bad_tables_raise_before_writing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cases = {
        "header_only.tsv": (b"image\tcaption\n", r"header_only\.tsv is empty: no rows"),
        "empty.csv": (b"", r"empty\.csv is empty: no header row"),
        "pairs.parquet": (b"PAR1", r"unsupported table extension '\.parquet'"),
        "ragged.tsv": (b"image\tcaption\na.png\tx\tEXTRA\n", r"ragged\.tsv:2: 3 fields but the header has 2"),
        "blank_image.csv": (b"image,caption\n,cap\n", r"blank_image\.csv:2: empty image path in column 'image'"),
        "nokey.jsonl": (b'{"image": "a.png"}\n', r"nokey\.jsonl:1 has no key 'caption' \(option caption_column\)"),
        "badcap.jsonl": (b'{"image": "a.png", "caption": 3}\n', r"badcap\.jsonl:1: caption column 'caption' must"),
    }
    for name, (content, match) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(UserError, match=match):
            ingest("image_text_table", path, out)
        assert not out.exists()
    with pytest.raises(UserError, match="is a folder"):
        ingest("image_text_table", tmp_path, tmp_path.parent / "out2")
    with pytest.raises(UserError, match="does not exist"):
        ingest("image_text_table", tmp_path / "nope.tsv", out)


def test_writer_and_reader_contracts(tmp_path: Path) -> None:
    rec = PairRecord(("a cat",), "a.png", None, None)
    split = PairSplit(np.zeros((1, 3, 8, 8), np.uint8), [rec], np.array([-1]))
    with pytest.raises(UserError, match="is empty"):
        write_pair_dataset(tmp_path / "e", {"train": PairSplit(np.zeros((0, 3, 8, 8), np.uint8), [], np.zeros(0))},
                           image_shape=(3, 8, 8), label_names=[], source={"name": "t"})
    with pytest.raises(UserError, match="1 images, 2 records and 1 labels"):
        write_pair_dataset(tmp_path / "m", {"train": PairSplit(split.images, [rec, rec], split.labels)},
                           image_shape=(3, 8, 8), label_names=[], source={"name": "t"})
    with pytest.raises(UserError, match=r"expected uint8 images of shape \(N, 3, 4, 4\), got uint8 \(1, 3, 8, 8\)"):
        write_pair_dataset(tmp_path / "s", {"train": split}, image_shape=(3, 4, 4), label_names=[], source={})
    assert not any(tmp_path.iterdir())
    m = write_pair_dataset(tmp_path / "ok", {"train": split, "test": split}, image_shape=(3, 8, 8), label_names=[],
                           source={"name": "t"})
    assert m["splits"]["train"]["shards"][0]["pairs"] == "train/shard-00000.pairs.jsonl"
    assert PairDataset(tmp_path / "ok").records("test") == [rec]
    with pytest.raises(UserError, match="unsupported format 'ssl_tasks.pair_shards/v1'"):
        ImageDataset(tmp_path / "ok")  # a plain image reader refuses the pair format
    (tmp_path / "ok" / "train" / "shard-00000.pairs.jsonl").write_text('{"captions": "x"}\n')
    with pytest.raises(UserError, match=r"pairs\.jsonl:1: expected an object with keys"):
        PairDataset(tmp_path / "ok").records("train")
    with pytest.raises(UserError, match="does not match the sha256"):
        PairDataset(tmp_path / "ok").verify()


# --------------------------------------------------------------------------- the tar source


def add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            add(tf, name, data)
    return path


def webdataset_members(rows: list[dict[str, str]]) -> list[tuple[str, bytes]]:
    members = []
    for i, r in enumerate(rows):
        key = f"shard/{i:04d}"
        members.append((f"{key}.png", (OPENCLIPART / r["filepath"]).read_bytes()))
        members.append((f"{key}.txt", f"{r['title']}\n\n{r['keywords'].replace('|', ' ')}\n".encode()))
        members.append((f"{key}.cls", r["category"].split("/")[0].encode()))
    return members


def test_tar_source_matches_the_table_source(tmp_path: Path, rows41: list[dict[str, str]]) -> None:
    rows = rows41[:10]
    tar = write_tar(tmp_path / "pairs.tar", webdataset_members(rows) + [("shard/README.md", b"ignored")])
    m = ingest("image_text_tar", tar, tmp_path / "out", options={"image_size": 32})
    src = m["source"]
    assert m["modality"] == "image_text" and m["image_shape"] == [3, 32, 32]
    assert src["format"] == "webdataset" and src["ignored_members"] == 1 and src["num_images"] == 10
    assert src["files_sha256"] == {"pairs.tar": hashlib.sha256(tar.read_bytes()).hexdigest()}
    assert m["label_names"] == sorted({r["category"].split("/")[0] for r in rows})
    ds = PairDataset(tmp_path / "out")
    for split in ds.splits():
        images, labels = ds.load(split)
        for img, lab, rec in zip(images, labels, ds.records(split), strict=True):
            row = rows[int(rec.image.split("/")[1][:4])]
            assert rec.image.endswith(".png") and rec.error is None and rec.sha256 == row["sha256"]
            assert rec.captions == (row["title"], row["keywords"].replace("|", " "))  # blank line skipped
            assert m["label_names"][lab] == row["category"].split("/")[0]
            data = (OPENCLIPART / row["filepath"]).read_bytes()
            assert np.array_equal(img, render(data, 32, (255, 255, 255)))  # same pixels as the table source
    # A folder of shards, read in name order, gives the same dataset.
    members = webdataset_members(rows)
    write_tar(tmp_path / "shards" / "b-000001.tar", members[15:])
    write_tar(tmp_path / "shards" / "a-000000.tar", members[:15])
    m2 = ingest("image_text_tar", tmp_path / "shards", tmp_path / "out2", options={"image_size": 32})
    assert m2["source"]["container"] == "directory" and list(m2["source"]["files_sha256"]) == ["a-000000.tar",
                                                                                              "b-000001.tar"]
    for split in ds.splits():
        assert PairDataset(tmp_path / "out2").records(split) == ds.records(split)
        assert np.array_equal(PairDataset(tmp_path / "out2").load(split)[0], ds.load(split)[0])
    again = ingest("image_text_tar", tar, tmp_path / "out3", options={"image_size": 32})
    assert again == m and all_files(tmp_path / "out3") == all_files(tmp_path / "out")


def test_tar_bad_members_are_recorded(tmp_path: Path, rows41: list[dict[str, str]]) -> None:
    members = webdataset_members(rows41[:6])
    png = members[0][1]
    members += [
        ("shard/0100.txt", b"a caption without its image\n"),
        ("shard/0101.png", png),  # no .txt
        ("../outside.png", png),
        ("../outside.txt", b"escaping\n"),
        ("/abs/0102.jpg", png),
        ("shard/0103.webp", b"not a webp at all"),
    ]
    tar = write_tar(tmp_path / "bad.tar", members)
    with tarfile.open(tar) as tf:  # tarfile keeps the names as written
        assert {"../outside.png", "/abs/0102.jpg"} <= set(tf.getnames())
    m = ingest("image_text_tar", tar, tmp_path / "out", options={"image_size": 16})
    assert m["source"]["images_with_errors"] == 4 and m["splits"]["train"]["labeled"] < m["splits"]["train"]["count"]
    ds = PairDataset(tmp_path / "out")
    got = {r.image: (r, img) for s in ds.splits() for r, img in zip(ds.records(s), ds.load(s)[0], strict=True)}
    assert got["shard/0100"][0].error == "missing image" and got["shard/0100"][0].captions == (
        "a caption without its image",)
    assert got["shard/0101.png"][0].error is None and got["shard/0101.png"][0].captions == ("",)
    assert got["../outside.png"][0].error == "member name escapes the archive root: ../outside.png"
    assert got["../outside.png"][0].captions == ("",) and got["../outside.png"][0].sha256 is None  # nothing read
    assert got["/abs/0102.jpg"][0].error == "member name escapes the archive root: /abs/0102.jpg"
    assert got["shard/0103.webp"][0].error.startswith("image does not decode: UnidentifiedImageError")
    for name in ("shard/0100", "../outside.png", "/abs/0102.jpg", "shard/0103.webp"):
        assert not got[name][1].any()


def test_tar_structural_errors(tmp_path: Path, rows41: list[dict[str, str]]) -> None:
    png = (OPENCLIPART / rows41[0]["filepath"]).read_bytes()
    cases = {
        "two_images.tar": ([("k/1.png", png), ("k/1.jpg", png), ("k/2.png", png)], r"key 'k/1' has two image members"),
        "empty_cls.tar": ([("k/1.png", png), ("k/1.cls", b"  \n"), ("k/2.png", png)], r"k/1\.cls: empty class label"),
        "nothing.tar": ([("notes.md", b"x")], r"no samples found"),
    }
    for name, (members, match) in cases.items():
        tar = write_tar(tmp_path / name, members)
        with pytest.raises(UserError, match=match):
            ingest("image_text_tar", tar, tmp_path / "out")
        assert not (tmp_path / "out").exists()
    write_tar(tmp_path / "split" / "a.tar", [("k/1.png", png), ("k/2.png", png)])
    write_tar(tmp_path / "split" / "b.tar", [("k/1.txt", b"late caption")])
    with pytest.raises(UserError, match=r"key 'k/1' also appears in .*a\.tar"):
        ingest("image_text_tar", tmp_path / "split", tmp_path / "out")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(UserError, match=r"no \.tar, \.tar\.gz, \.tgz shards in folder"):
        ingest("image_text_tar", tmp_path / "empty_dir", tmp_path / "out")
    (tmp_path / "junk.tar").write_bytes(b"junk" * 100)
    with pytest.raises(UserError, match="neither a directory nor a readable tar archive"):
        ingest("image_text_tar", tmp_path / "junk.tar", tmp_path / "out")
    with pytest.raises(UserError, match=r"unknown option 'caption_column'; valid: background, image_size"):
        ingest("image_text_tar", tmp_path / "nothing.tar", tmp_path / "out", options={"caption_column": "x"})
    assert not (tmp_path / "out").exists()


def test_tar_integer_classes_in_a_gzipped_shard_folder(tmp_path: Path, rows41: list[dict[str, str]]) -> None:
    members = []
    for i, (r, cls) in enumerate(zip(rows41[:6], ["10", "9", "2", "10", "9", "2"], strict=True)):
        members += [(f"{i}.png", (OPENCLIPART / r["filepath"]).read_bytes()), (f"{i}.txt", b"x\n"), (f"{i}.cls", cls.encode())]
    (tmp_path / "gz").mkdir()
    with tarfile.open(tmp_path / "gz" / "000.tar.gz", "w:gz") as tf:
        for name, data in members:
            add(tf, name, data)
    m = ingest("image_text_tar", tmp_path / "gz", tmp_path / "out", test_fraction=0.5, options={"image_size": 8})
    assert m["label_names"] == ["2", "9", "10"]  # integers sort numerically, as text_table does
    assert m["splits"]["test"]["class_counts"] == [1, 1, 1] and m["source"]["split"] == "stratified"


def test_symlink_inside_the_root_is_followed(tmp_path: Path, rows41: list[dict[str, str]]) -> None:
    folder = tmp_path / "in"
    table = subset(folder, rows41[:4], "images/alias.png\tan alias\tk\tfood\t-\n")
    (folder / "images" / "alias.png").symlink_to(folder / rows41[0]["filepath"])
    ingest("image_text_table", table, tmp_path / "out", options=OPTIONS)
    ds = PairDataset(tmp_path / "out")
    recs = {r.image: r for s in ds.splits() for r in ds.records(s)}
    assert recs["images/alias.png"].error is None and recs["images/alias.png"].sha256 == rows41[0]["sha256"]
