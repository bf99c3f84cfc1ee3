"""The ``lineage`` stage's files and the start-checkpoint guard (ssl_tasks/pipeline/lineage.py), without DVC;
tests/pipeline/test_lineage.py checks what DVC makes of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssl_tasks.core.errors import UserError
from ssl_tasks.pipeline.cli import main
from ssl_tasks.pipeline.lineage import MISSING, check_starts, fingerprint, stale_starts, start_records, write_lineage


def raw_params(start: str = "artifacts/runs/a/pretrain/seed-0/encoder.pt") -> dict:
    return {"datasets": {"digits": {"source": "sklearn_digits"},
                         "mine": {"source": "text", "path": "src/corpus/input.txt"},
                         "folder": {"source": "image_folder", "path": "src/images"}},
            "runs": {"a": {"dataset": "digits", "objective": "simclr"},
                     "b": {"dataset": "digits", "objective": "simclr", "init_encoder": start},
                     "lit": {"dataset": "digits", "objective": "lit", "objective_kwargs": {"init_image": start}}}}


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def trained(root: Path, run: str, records: list[dict]) -> None:
    """A finished pretrain of ``run`` as the stage leaves it: ``seed-<s>/meta.json`` with the starts it read."""
    for seed in (0, 1):
        put(root / "artifacts" / "runs" / run / "pretrain" / f"seed-{seed}" / "meta.json",
            json.dumps({"starts": records}).encode())


def read(root: Path, name: str) -> dict:
    return json.loads((root / "artifacts" / "lineage" / f"{name}.json").read_text())


def test_fingerprint_follows_content_and_names(tmp_path: Path) -> None:
    f = put(tmp_path / "d" / "x.txt", b"one")
    folder = fingerprint(tmp_path / "d")
    assert fingerprint(f) != folder and fingerprint(tmp_path / "nothing") == MISSING
    put(tmp_path / "d" / "sub" / "y.bin", b"two")
    with_sub = fingerprint(tmp_path / "d")
    assert with_sub != folder
    (tmp_path / "d" / "sub" / "y.bin").rename(tmp_path / "d" / "sub" / "z.bin")  # same bytes, another name
    assert fingerprint(tmp_path / "d") != with_sub
    (tmp_path / "d" / "sub" / "z.bin").rename(tmp_path / "d" / "sub" / "y.bin")
    assert fingerprint(tmp_path / "d") == with_sub  # deterministic: the walk is sorted


def test_one_file_per_dataset_and_run_holding_what_its_params_name(tmp_path: Path) -> None:
    put(tmp_path / "src" / "corpus" / "input.txt", b"to be or not")
    put(tmp_path / "src" / "images" / "cat" / "1.png", b"png")
    start = put(tmp_path / "artifacts" / "runs" / "a" / "pretrain" / "seed-0" / "encoder.pt", b"weights")
    write_lineage(raw_params(), tmp_path)
    assert read(tmp_path, "dataset-digits") == {} and read(tmp_path, "run-a") == {}
    assert read(tmp_path, "dataset-mine") == {"datasets.mine.path": {
        "path": "src/corpus/input.txt", "sha256": fingerprint(tmp_path / "src" / "corpus" / "input.txt")}}
    assert read(tmp_path, "dataset-folder")["datasets.folder.path"]["sha256"] == fingerprint(tmp_path / "src/images")
    assert read(tmp_path, "run-b") == {"runs.b.init_encoder": {"path": "artifacts/runs/a/pretrain/seed-0/encoder.pt",
                                                               "sha256": fingerprint(start)}}
    assert list(read(tmp_path, "run-lit")) == ["runs.lit.objective_kwargs.init_image"]
    before = {n: read(tmp_path, n) for n in ("dataset-digits", "dataset-folder", "run-a", "run-b")}
    put(tmp_path / "src" / "corpus" / "input.txt", b"to be or not to be")  # only what names it moves
    raw = raw_params()
    del raw["runs"]["lit"]
    write_lineage(raw, tmp_path)
    assert read(tmp_path, "dataset-mine")["datasets.mine.path"]["sha256"] == fingerprint(
        tmp_path / "src" / "corpus" / "input.txt")
    assert {n: read(tmp_path, n) for n in before} == before
    assert not (tmp_path / "artifacts" / "lineage" / "run-lit.json").exists()  # a removed run's file goes


def test_a_tokenizer_checkpoint_is_hashed_in_its_datasets_tokenizer_file(tmp_path: Path) -> None:
    """HuBERT's iteration 2: the tokenizer stage clusters a pretrained encoder's frames, so the checkpoint folder it
    names is an input of that stage only (``tokenizer-<ds>.json``), not of ingest (``dataset-<ds>.json``)."""
    folder = tmp_path / "artifacts" / "runs" / "hubert" / "pretrain" / "seed-0"
    put(folder / "encoder.pt", b"iteration 1")
    put(folder / "meta.json", b"{}")
    raw = raw_params()
    raw["datasets"]["digits"]["tokenizer"] = {"checkpoint": "artifacts/runs/hubert/pretrain/seed-0", "layer": 2}
    write_lineage(raw, tmp_path)
    assert read(tmp_path, "tokenizer-digits") == {"datasets.digits.tokenizer.checkpoint": {
        "path": "artifacts/runs/hubert/pretrain/seed-0", "sha256": fingerprint(folder)}}
    assert read(tmp_path, "tokenizer-mine") == {} and read(tmp_path, "dataset-digits") == {}
    before = read(tmp_path, "tokenizer-digits")
    put(folder / "encoder.pt", b"iteration 1, retrained")
    write_lineage(raw, tmp_path)
    assert read(tmp_path, "tokenizer-digits") != before


def test_a_dataset_file_outside_the_project_brings_its_folder_never_the_project(tmp_path: Path) -> None:
    """A table outside the project: its folder (the images beside it). A file in the project, or in a folder that
    holds the project: the file alone, since that folder holds the outputs every stage writes."""
    from ssl_tasks.pipeline.lineage import dataset_inputs

    root = tmp_path / "proj"
    put(root / "params.yaml", b"")
    put(tmp_path / "shared" / "clipart" / "captions.tsv", b"image\tcaption\n")
    put(tmp_path / "shared" / "clipart" / "images" / "a.png", b"png")
    put(root / "mine" / "table.csv", b"x,label")
    put(tmp_path / "vec.csv", b"f0,label")
    raw = {"datasets": {"clip": {"path": "../shared/clipart/captions.tsv"}, "in": {"path": "mine/table.csv"},
                        "holding": {"path": str(tmp_path / "vec.csv")}, "up": {"path": ".."}}}
    inputs = {name: next(iter(v.values()))[1].resolve() for name, v in dataset_inputs(raw, root).items()}
    assert inputs == {"clip": (tmp_path / "shared" / "clipart").resolve(), "in": (root / "mine/table.csv").resolve(),
                      "holding": (tmp_path / "vec.csv").resolve(), "up": tmp_path.resolve()}
    write_lineage(raw, root)
    before = read(root, "dataset-up")
    put(root / "artifacts" / "runs" / "x" / "out.bin", b"an output")  # the project's own files never count
    put(tmp_path / "shared" / "clipart" / "images" / "a.png", b"another png")
    write_lineage(raw, root)
    assert read(root, "dataset-up") != before  # the folder moved (the image) ...
    put(root / "artifacts" / "runs" / "x" / "out.bin", b"another output")
    again = read(root, "dataset-up")
    write_lineage(raw, root)
    assert read(root, "dataset-up") == again  # ... but not with the project's outputs


def test_a_run_trained_from_the_current_start_keeps_its_entry(tmp_path: Path) -> None:
    """The first repro writes b's entry before a's encoder exists (``missing``); b then trains from it. While b is
    fresh its entry stays as DVC recorded it (no second training); a changed start moves it (DVC retrains b)."""
    write_lineage(raw_params(), tmp_path)
    first = read(tmp_path, "run-b")
    assert first["runs.b.init_encoder"]["sha256"] == MISSING
    start = put(tmp_path / "artifacts" / "runs" / "a" / "pretrain" / "seed-0" / "encoder.pt", b"weights v1")
    trained(tmp_path, "b", start_records("b", raw_params()["runs"]["b"], tmp_path))
    write_lineage(raw_params(), tmp_path)
    assert read(tmp_path, "run-b") == first
    put(start, b"weights v2")  # a retrained
    write_lineage(raw_params(), tmp_path)
    assert read(tmp_path, "run-b")["runs.b.init_encoder"]["sha256"] == fingerprint(start) != MISSING
    # another path is another entry even for a fresh run
    other = put(tmp_path / "elsewhere.pt", b"weights v2")
    trained(tmp_path, "b", start_records("b", raw_params(str(other))["runs"]["b"], tmp_path))
    write_lineage(raw_params(str(other)), tmp_path)
    assert read(tmp_path, "run-b")["runs.b.init_encoder"]["path"] == str(other)


def test_a_run_whose_start_changed_since_it_trained_is_refused(tmp_path: Path) -> None:
    start = put(tmp_path / "artifacts" / "runs" / "a" / "pretrain" / "seed-0" / "encoder.pt", b"weights v1")
    raw = raw_params()
    records = start_records("b", raw["runs"]["b"], tmp_path)
    assert records == [{"key": "runs.b.init_encoder", "path": "artifacts/runs/a/pretrain/seed-0/encoder.pt",
                        "sha256": fingerprint(start)}]
    trained(tmp_path, "b", records)
    assert stale_starts(raw, tmp_path) == []
    check_starts(raw, tmp_path)
    put(start, b"weights v2")
    stale = stale_starts(raw, tmp_path)
    assert len(stale) == 1 and stale[0].startswith("pretrain@b started from artifacts/runs/a/pretrain/seed-0/encoder.pt")
    assert stale_starts(raw, tmp_path, ["a"]) == []  # only the runs asked about
    with pytest.raises(UserError, match=r"stale results refused: pretrain@b .*`dvc repro` again retrains pretrain@b"):
        check_starts(raw, tmp_path, ["b"])


def test_the_job_key_moves_with_the_start_content() -> None:
    from ssl_tasks.pipeline.pretrain import _job_key
    from ssl_tasks.training.config import TrainConfig, TrainJob, objective_config

    job = TrainJob(run="b", seed=0, data_dir="/d", objective="simclr", objective_config=objective_config("simclr", {}),
                   encoder="small_cnn", encoder_kwargs={}, train=TrainConfig(), mean=(0.5,), std=(0.5,),
                   init_encoder="/a/encoder.pt")
    rec = [{"key": "runs.b.init_encoder", "path": "a/encoder.pt", "sha256": "1" * 64}]
    assert _job_key(job) == _job_key(job, [])  # runs without a start keep their names
    assert _job_key(job, rec) != _job_key(job) != _job_key(job, [{**rec[0], "sha256": "2" * 64}])


def test_plugins_are_hashed_where_they_would_be_imported_from(tmp_path: Path) -> None:
    put(tmp_path / "my_plugin.py", b"X = 1\n")
    put(tmp_path / "my_pkg" / "__init__.py", b"")
    put(tmp_path / "my_pkg" / "objective.py", b"Y = 1\n")
    raw = {**raw_params(), "plugins": ["my_plugin", "my_pkg.objective", "not_there"]}
    write_lineage(raw, tmp_path)
    first = read(tmp_path, "plugins")
    assert first["plugins.my_plugin"] == {"path": "my_plugin", "sha256": fingerprint(tmp_path / "my_plugin.py")}
    assert first["plugins.my_pkg.objective"]["sha256"] == fingerprint(tmp_path / "my_pkg")  # the whole package
    assert first["plugins.not_there"]["sha256"] == MISSING
    put(tmp_path / "my_pkg" / "__pycache__" / "objective.cpython-311.pyc", b"compiled")  # no content of ours
    write_lineage(raw, tmp_path)
    assert read(tmp_path, "plugins") == first
    put(tmp_path / "my_pkg" / "objective.py", b"Y = 2\n")
    write_lineage(raw, tmp_path)
    assert read(tmp_path, "plugins")["plugins.my_pkg.objective"] != first["plugins.my_pkg.objective"]
    assert read(tmp_path, "plugins")["plugins.my_plugin"] == first["plugins.my_plugin"]
    write_lineage(raw_params(), tmp_path)
    assert read(tmp_path, "plugins") == {}


def test_the_cli_writes_the_lineage_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params()))
    monkeypatch.chdir(tmp_path)
    assert main(["lineage"]) == 0
    assert "lineage: 10 files in artifacts/lineage" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "artifacts" / "lineage").iterdir()) == [
        "dataset-digits.json", "dataset-folder.json", "dataset-mine.json", "plugins.json", "run-a.json", "run-b.json",
        "run-lit.json", "tokenizer-digits.json", "tokenizer-folder.json", "tokenizer-mine.json"]
    (tmp_path / "params.yaml").write_text("runs: [")
    assert main(["lineage"]) == 2 and "cannot read params.yaml" in capsys.readouterr().err
