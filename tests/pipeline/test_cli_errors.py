"""User errors: exit status 2, one readable `error:` line, no traceback, no partial output."""

from __future__ import annotations

import gzip
import os
import pickle
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from ssl_tasks.objectives import OBJECTIVES
from ssl_tasks.pipeline.cli import main

REPO = Path(__file__).resolve().parents[2]
FASHION = REPO.parent / "shared" / "data" / "fashion_mnist"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "ssl-tasks"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd or REPO, timeout=300)


def params_with(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(raw)
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_unknown_objective_subprocess_has_no_traceback(tmp_path: Path) -> None:
    p = params_with(tmp_path, lambda r: r["runs"]["simclr"].update(objective="nope"))
    res = cli("--params", str(p), "--root", str(tmp_path), "pretrain", "--run", "simclr")
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: {p}: unknown objective 'nope'; valid: {', '.join(OBJECTIVES.names())}"
    assert "Traceback" not in res.stderr + res.stdout


def test_wrong_param_type_subprocess(tmp_path: Path) -> None:
    p = params_with(tmp_path, lambda r: r["train"].update(epochs="ten"))
    res = cli("--params", str(p), "--root", str(tmp_path), "pretrain", "--run", "simclr")
    assert res.returncode == 2
    assert res.stderr.startswith(f"error: {p}: train.epochs: expected an integer, got 'ten'")
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda r: r["train"].update(epoch=3), "unknown key(s) epoch; valid: batch_size"),
        (lambda r: r["runs"]["byol"]["objective_kwargs"].update(temprature=0.1), "runs.byol.objective_kwargs: unknown key(s) temprature"),
        (lambda r: r["runs"]["byol"].update(encoder="vgg"), "unknown encoder 'vgg'; valid: causal_transformer, gat, gcn, resnet18, seq2seq_transformer"),
        (lambda r: r["runs"]["byol"].update(dataset="imagenet"), "unknown dataset 'imagenet'"),
        (lambda r: r["evaluation"].update(protocols=["knn", "zero_shots"]), "unknown protocol 'zero_shots'"),
        (lambda r: r["train"].update(lr=-1.0), "lr must be > 0"),
        (lambda r: r["runs"]["simclr"]["objective_kwargs"]["views"].update(crop_scale=[0.0, 1.0]), "crop_scale"),
    ],
)
def test_invalid_params_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str], edit, message: str) -> None:
    p = params_with(tmp_path, edit)
    assert main(["--params", str(p), "--root", str(tmp_path), "pretrain", "--run", "simclr"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_unknown_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--params", str(REPO / "params.yaml"), "--root", str(tmp_path), "evaluate", "--run", "dino"]) == 2
    assert "unknown run 'dino'; runs in params: byol, moco_v2, simclr" in capsys.readouterr().err


def test_ingest_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["ingest", "--source", "idx", "--path", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err and not out.exists()


def test_ingest_truncated_idx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "fmnist"
    src.mkdir()
    for f in FASHION.glob("*.gz"):
        data = gzip.decompress(f.read_bytes())
        if f.name.startswith("t10k-images"):
            data = data[: len(data) // 2]  # truncated
        (src / f.name.removesuffix(".gz")).write_bytes(data)
    out = tmp_path / "out"
    assert main(["ingest", "--source", "idx", "--path", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "t10k-images-idx3-ubyte" in err and not out.exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())  # no temp leftovers


class _Payload:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def test_cifar_pickle_with_code_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / f"pwned-{uuid.uuid4().hex}"
    src = tmp_path / "cifar"
    src.mkdir()
    evil = {b"data": _Payload(f"touch {marker}"), b"labels": [0]}
    for name in ("data_batch_1", "test_batch"):
        (src / name).write_bytes(pickle.dumps(evil, protocol=2))
    out = tmp_path / "out"
    assert main(["ingest", "--source", "cifar", "--path", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "system" in err
    assert not marker.exists() and not out.exists()


def test_empty_image_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["ingest", "--source", "image_folder", "--path", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no images found" in capsys.readouterr().err


def test_list_shows_registries(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("simclr", "moco_v2", "byol", "small_cnn", "resnet18", "knn", "semi_10pct", "idx", "cifar"):
        assert word in out


def test_console_script_fast_exit_keeps_exit_handlers_and_output(tmp_path: Path) -> None:
    """``entry`` skips module teardown but still runs atexit handlers, flushes both streams, keeps the status."""
    marker = tmp_path / "atexit-ran"
    code = ("import atexit, sys\n"
            "from ssl_tasks.pipeline.cli import entry\n"
            f"atexit.register(lambda: open({str(marker)!r}, 'w').write('ok'))\n"
            "print('buffered line without newline flush', end='')\n"
            "sys.argv = ['ssl-tasks', *sys.argv[1:]]\n"
            "entry()\n")
    ok = subprocess.run([sys.executable, "-c", code, "list"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("buffered line without newline flush") and "simclr" in ok.stdout
    assert marker.read_text() == "ok"
    marker.unlink()
    bad = subprocess.run([sys.executable, "-c", code, "--root", str(tmp_path), "pretrain", "--run", "nope"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
    assert marker.read_text() == "ok"
