"""The bad-input corpus (issue 25): one generated, small case per row, each a hostile or careless input given to the
real CLI in process. Every row must end with exit status 2 and exactly one ``error:`` line naming the problem (no
traceback), and leave no output and no temporary folder behind. Rows marked "(item N)" are the issue's numbered
findings; the others are cases that already failed cleanly when it was filed, kept here so they stay that way. The
inputs whose right outcome is a value, not an error (16-bit scaling, train/test split folders), and the faults that
need a kill or a Ray cluster live in the files named in docs/DESIGN.md; this file is the error table.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import shutil
import struct
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import REPO
from PIL import Image

from ssl_tasks.pipeline.cli import main

Case = Callable[[Path], list[str]]  # builds the input under a folder; returns the CLI arguments


def _pngs(folder: Path, classes: dict[str, int], size: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for cls, n in classes.items():
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(folder / cls / f"{i}.png")
    return folder


def _ingest(src: Path, t: Path, source: str = "image_folder") -> list[str]:
    return ["ingest", "--source", source, "--path", str(src), "--out", str(t / "out")]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb(t: Path) -> list[str]:
    """A 24-byte header promising 100000 x 100000 pixels."""
    (t / "src").mkdir(parents=True)
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        _png_chunk(b"IEND", b"")
    (t / "src" / "big.png").write_bytes(png)
    return _ingest(t / "src", t)


def truncated_png(t: Path) -> list[str]:
    src = _pngs(t / "src", {"a": 3, "b": 3})
    p = src / "a" / "1.png"
    p.write_bytes(p.read_bytes()[:40])
    return _ingest(src, t)


def not_an_image(t: Path) -> list[str]:
    src = _pngs(t / "src", {"a": 3, "b": 3})
    (src / "b" / "x.png").write_bytes(os.urandom(200))
    return _ingest(src, t)


def tar_with(members: dict[str, bytes | None], t: Path) -> Path:
    """A tar of ``members`` (name -> bytes; None: a symlink to /etc/passwd)."""
    path = t / "src.tar"
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8), 7).save(buf, format="PNG")
    return buf.getvalue()


class _Payload:
    def __reduce__(self):  # noqa: ANN204
        return (os.system, ("true",))


def cifar_payload(t: Path) -> list[str]:
    (t / "src").mkdir()
    for name in ("data_batch_1", "test_batch"):
        (t / "src" / name).write_bytes(pickle.dumps({b"data": _Payload(), b"labels": [0]}, protocol=2))
    return _ingest(t / "src", t, "cifar")


def idx_wrong_magic(t: Path) -> list[str]:
    (t / "src").mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (t / "src" / f"{name}.gz").write_bytes(gzip.compress(b"\x00\x00\x09\x03" + b"\x00" * 20))
    return _ingest(t / "src", t, "idx")


def text_table_no_column(t: Path) -> list[str]:
    (t / "src").mkdir()
    (t / "src" / "train.tsv").write_text("sentence\tlabel\nhello\t1\n")
    return ["ingest", "--source", "text_table", "--path", str(t / "src"), "--option", "text_column=text",
            "--out", str(t / "out")]


def foreign_out(t: Path) -> list[str]:  # (item 1)
    (t / "out").mkdir()
    (t / "out" / "manifest.json").write_text("{}")
    (t / "out" / "important.txt").write_text("x")
    return ["ingest", "--source", "sklearn_digits", "--out", str(t / "out")]


def params_case(edit: Callable[[dict], None] | None = None, text: Callable[[str], str] | None = None,
                run: str = "simclr") -> Case:
    def build(t: Path) -> list[str]:
        body = (REPO / "params.yaml").read_text()
        if edit is not None:
            raw = yaml.safe_load(body)
            edit(raw)
            body = yaml.safe_dump(raw, sort_keys=False)
        if text is not None:
            body = text(body)
        (t / "params.yaml").write_text(body)
        digits = t.parent / "digits-corpus"
        shutil.copytree(digits, t / "data" / "digits")
        return ["--params", str(t / "params.yaml"), "--root", str(t), "pretrain", "--run", run]
    return build


def flipped_shard(t: Path) -> list[str]:  # (item 7)
    shutil.copytree(t.parent / "digits-corpus", t / "ds")
    shard = next((t / "ds" / "train").glob("*.images.npy"))
    data = bytearray(shard.read_bytes())
    data[-7] ^= 1
    shard.write_bytes(bytes(data))
    return ["validate", "--data", str(t / "ds"), "--report", str(t / "report.json")]


def vit(kwargs: dict) -> Callable[[dict], None]:
    return lambda r: r["runs"].update(simclr={"dataset": "digits", "objective": "mae", "encoder": "vit",
                                              "encoder_kwargs": kwargs})


CORPUS: list[tuple[str, Case, str]] = [
    # ingest: files
    ("decompression bomb", bomb, "DecompressionBombError"),
    ("truncated png (item 2's input)", truncated_png, "cannot read image"),
    ("random bytes named .png", not_an_image, "x.png"),
    ("tar member with ..", lambda t: _ingest(tar_with({"../a/x.png": _png_bytes()}, t), t), "no images found"),
    ("tar symlink member", lambda t: _ingest(tar_with({"a/x.png": None}, t), t), "no images found"),
    ("absolute tar member (item 5)",
     lambda t: _ingest(tar_with({"a/1.png": _png_bytes(), "b/1.png": _png_bytes(), "/abs/x.png": _png_bytes()}, t), t),
     "has an absolute path"),
    ("one class folder (item 5)", lambda t: _ingest(_pngs(t / "src", {"cat": 4}), t), "one class folder, 'cat'"),
    ("folder beside train/ and test/ (item 5)",
     lambda t: _ingest(_pngs(t / "src", {"train/a": 2, "train/b": 2, "test/a": 1, "test/b": 1, "val/a": 1}), t),
     "'val' lies beside them"),
    ("cifar pickle with a payload", cifar_payload, "refused"),
    ("idx with a wrong magic number", idx_wrong_magic, "magic"),
    ("text table without the column", text_table_no_column, "text"),
    ("ingest --out over a folder that is not ours (item 1)", foreign_out, "refusing to overwrite"),
    ("ingest --out . (item 1)", lambda t: ["ingest", "--source", "sklearn_digits", "--out", "."], "refusing"),
    ("validate a bit-flipped shard (item 7)", flipped_shard, "does not match the sha256"),
    # params
    ("encoder kwarg typo (item 8)", params_case(lambda r: r["runs"]["simclr"]["encoder_kwargs"].update(widht=32)),
     "unexpected keyword argument 'widht'"),
    ("temperature 0 (item 8)", params_case(lambda r: r["runs"]["simclr"]["objective_kwargs"].update(temperature=0)),
     "temperature must be > 0"),
    ("lr .nan (item 8)", params_case(text=lambda s: s.replace("lr: 0.002", "lr: .nan")), "expected a finite number"),
    ("lr .inf (item 6)", params_case(text=lambda s: s.replace("lr: 0.002", "lr: .inf")), "expected a finite number"),
    ("vit patch that does not divide the image (item 8)",
     params_case(vit({"patch_size": 3, "width": 32, "heads": 4})), "not a multiple of patch_size 3"),
    ("unknown objective", params_case(lambda r: r["runs"]["simclr"].update(objective="nope")),
     "unknown objective 'nope'"),
    ("wrong param type", params_case(lambda r: r["train"].update(epochs="ten")), "expected an integer"),
    ("yaml syntax error (item 10)", params_case(text=lambda s: s.replace("epochs: 20", "epochs: [20")),
     "invalid YAML at line"),
    ("duplicate key (item 10)", params_case(text=lambda s: s.replace("  lr: 0.002\n", "  lr: 0.002\n  lr: 2.0\n")),
     "is given twice"),
    ("batch larger than the data", params_case(lambda r: r["train"].update(batch_size=4096)), "no full batch"),
]


@pytest.fixture(scope="module")
def corpus_root(digits_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    shutil.copytree(digits_dataset, root / "digits-corpus")
    return root


@pytest.mark.parametrize("name,case,message", CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_input_is_one_error_line_and_leaves_nothing(name: str, case: Case, message: str, corpus_root: Path,
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    t = corpus_root / name.replace(" ", "_").replace("/", "").replace("'", "").replace(".", "")
    t.mkdir()
    args = case(t)
    monkeypatch.chdir(t)
    before = {p for p in t.rglob("*")}
    capsys.readouterr()
    assert main(args) == 2
    first, *more = capsys.readouterr().err.splitlines()
    assert first.startswith("error: ") and message in first, first
    assert all(line.startswith("full report: ") for line in more), more  # validate names its report file
    after = {p for p in t.rglob("*")} - before
    assert not [p for p in after if p.name.endswith(".tmp") or ".old-" in p.name], after
    assert not (t / "out").exists() or (t / "out" / "important.txt").is_file()  # nothing written, user files kept
    assert not (t / "mlflow").exists() and not (t / "artifacts" / ".ray").exists()  # no run started
