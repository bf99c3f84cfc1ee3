"""Every param is checked before compute (issue 25, item 8): a typo in encoder kwargs, a temperature of 0, a NaN, a
ViT patch that does not divide the image passed parsing and failed inside the Ray worker (exit 1, six tracebacks,
two Ray retries). The pretrain stage now builds the run's objective on its own process first, and a ``UserError``
that still happens in a worker comes back as one line without retries."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from helpers import REPO

from ssl_tasks.core.errors import UserError
from ssl_tasks.pipeline.layout import Layout
from ssl_tasks.pipeline.params import parse_params
from ssl_tasks.pipeline.pretrain import pretrain

VIT = {"dataset": "digits", "objective": "mae", "encoder": "vit"}


@pytest.mark.parametrize("edit,message", [
    (lambda r: r["runs"]["simclr"]["encoder_kwargs"].update(widht=32),
     "encoder 'small_cnn': .*unexpected keyword argument 'widht'"),
    (lambda r: r["runs"]["simclr"]["objective_kwargs"].update(temperature=0), "temperature must be > 0, got 0"),
    (lambda r: r["runs"].update(simclr={**VIT, "encoder_kwargs": {"patch_size": 3, "width": 32, "heads": 4}}),
     "image_size 8 is not a multiple of patch_size 3"),
    (lambda r: r["runs"].update(simclr={**VIT, "encoder_kwargs": {"patch_size": 2, "width": 30, "heads": 4}}),
     "width 30 is not a multiple of heads 4"),
])
def test_bad_params_fail_before_ray_or_mlflow_start(digits_dataset: Path, tmp_path: Path, monkeypatch, edit,
                                                     message: str) -> None:  # noqa: ANN001
    import ssl_tasks.training.ray_runner as ray_runner

    def no_ray(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was started for a run whose params are wrong")

    monkeypatch.setattr(ray_runner, "init_ray", no_ray)  # a tripwire: the error must come first
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(raw)
    shutil.copytree(digits_dataset, tmp_path / "data" / "digits")
    with pytest.raises(UserError, match=message):
        pretrain(parse_params(raw), "simclr", Layout(tmp_path))
    assert not (tmp_path / "mlflow").exists()


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_numbers_are_refused_anywhere_in_params(value: str) -> None:
    text = (REPO / "params.yaml").read_text().replace("temperature: 0.2", f"temperature: {value}", 1)
    with pytest.raises(UserError, match=r"runs.simclr.objective_kwargs.temperature: expected a finite number"):
        parse_params(yaml.safe_load(text))


@pytest.mark.slow
def test_a_user_error_in_a_ray_worker_is_one_line_without_retries(digits_dataset: Path, tmp_path: Path,
                                                                  capfd: pytest.CaptureFixture[str]) -> None:
    """fit() on a job the stage did not check (max_failures 2): the worker's UserError, raised once."""
    from ssl_tasks.training.config import TrainConfig, TrainJob, objective_config
    from ssl_tasks.training.ray_runner import fit

    job = TrainJob(run="typo", seed=0, data_dir=str(digits_dataset), objective="simclr",
                   objective_config=objective_config("simclr", {}), encoder="small_cnn",
                   encoder_kwargs={"widht": 8}, train=TrainConfig(epochs=1, batch_size=256, max_failures=2),
                   mean=(0.3,), std=(0.37,))
    with pytest.raises(UserError) as err:
        fit(job, storage_dir=tmp_path / "ray", name="typo")
    assert type(err.value) is UserError and "\n" not in str(err.value)
    assert "unexpected keyword argument 'widht'" in str(err.value)
    out = capfd.readouterr()
    assert (out.out + out.err).count("Traceback") == 0
