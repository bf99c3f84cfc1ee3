"""Resume survives a corrupt latest checkpoint (issue 25, item 9): a ``state.pt`` cut short (a kill mid-write, a
full disk) made the resume crash with a traceback, three times under Ray; now the run starts afresh with one warning
and ends exactly as an uninterrupted run does (seeded CPU runs are bit-identical)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssl_tasks.training.config import TrainConfig, TrainJob, objective_config
from ssl_tasks.training.loop import CHECKPOINT_FILE, LocalSession, run_training


def _job(data: Path) -> TrainJob:
    return TrainJob(run="cut", seed=0, data_dir=str(data), objective="simclr", objective_config=objective_config("simclr", {}),
                    encoder="small_cnn", encoder_kwargs={"width": 8},
                    train=TrainConfig(epochs=2, batch_size=512, warmup_epochs=0, monitor_samples=128), mean=(0.3,),
                    std=(0.37,))


@pytest.fixture(scope="module")
def reference(digits_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> LocalSession:
    ref = LocalSession(tmp_path_factory.mktemp("ref"))
    run_training(_job(digits_dataset), ref)
    return ref


@pytest.mark.parametrize("damage", ["truncated", "empty", "not_a_checkpoint"])
def test_a_corrupt_checkpoint_starts_afresh_with_a_warning(digits_dataset: Path, reference: LocalSession,
                                                           tmp_path: Path, damage: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    ref = reference
    ckpt = tmp_path / "cut"
    ckpt.mkdir()
    good = (ref.ckpt_dir / CHECKPOINT_FILE).read_bytes()
    if damage == "truncated":
        (ckpt / CHECKPOINT_FILE).write_bytes(good[: len(good) // 2])
    elif damage == "empty":
        (ckpt / CHECKPOINT_FILE).write_bytes(b"")
    else:
        torch.save({"weights": torch.zeros(2)}, ckpt / CHECKPOINT_FILE)
    capsys.readouterr()
    session = LocalSession(ckpt)
    run_training(_job(digits_dataset), session)
    out = capsys.readouterr().out
    assert f"[cut] warning: checkpoint {ckpt / CHECKPOINT_FILE} cannot be read" in out and "starting afresh" in out
    assert [r["epoch"] for r in session.reports] == [1.0, 2.0]
    a = torch.load(ref.ckpt_dir / CHECKPOINT_FILE, weights_only=True)["eval_encoder"]
    b = torch.load(session.ckpt_dir / CHECKPOINT_FILE, weights_only=True)["eval_encoder"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same run as without the damaged file
