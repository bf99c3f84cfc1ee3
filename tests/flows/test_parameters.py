"""Flow parameters -> params.yaml of a workspace, and the stage order DVC gives (no flow run)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.pipeline import apply_parameters, check_params, source_files, stage_order

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["datasets"]["other"] = dict(p["datasets"]["digits"])
    p["runs"]["simclr_other"] = {**p["runs"]["simclr"], "dataset": "other", "train": {"epochs": 7}}
    return p


def test_objectives_epochs_workers_and_overrides(raw: dict[str, Any]) -> None:
    before = copy.deepcopy(raw)
    p = apply_parameters(raw, objectives=["byol", "simclr_other"], epochs=2, num_workers=2,
                         overrides={"baselines.supervised_epochs": 3, "evaluation.settings.k": 5,
                                    "runs.simclr.encoder": "resnet18"})  # simclr was dropped: skipped
    assert list(p["runs"]) == ["byol", "simclr_other"] and set(p["datasets"]) == {"digits", "other"}
    assert p["train"]["epochs"] == 2 and p["train"]["num_workers"] == 2
    assert p["runs"]["simclr_other"]["train"]["epochs"] == 2  # a run's own override follows too
    assert p["baselines"]["supervised_epochs"] == 3 and p["evaluation"]["settings"]["k"] == 5
    assert raw == before and raw["train"]["epochs"] != 2  # input untouched
    check_params(p, "test")


def test_dataset_keeps_its_runs_or_retargets_the_chosen_ones(raw: dict[str, Any]) -> None:
    p = apply_parameters(raw, dataset="other")
    assert list(p["runs"]) == ["simclr_other"] and list(p["datasets"]) == ["other"]
    p = apply_parameters(raw, dataset="other", objectives=["byol"])
    assert p["runs"]["byol"]["dataset"] == "other" and list(p["datasets"]) == ["other"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"objectives": ["nope"]}, "valid run names: simclr, moco_v2, byol, simclr_other"),
    ({"dataset": "mnist"}, "unknown dataset 'mnist'; datasets in params: digits, other"),
    ({"overrides": {"trian.epochs": 1}}, "unknown top-level key 'trian'"),
    ({"overrides": {"seed.x": 1}}, "seed is a int, not a mapping"),
])
def test_bad_parameters_name_the_valid_choices(raw: dict[str, Any], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply_parameters(raw, **kwargs)


def test_library_parser_rejects_bad_nested_keys(raw: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="epoch"):
        check_params(apply_parameters(raw, overrides={"train.epoch": 1}), "test")


def test_stage_order_is_dvc_repro_order(tmp_path: Path, project_factory: Any) -> None:
    order = stage_order(project_factory(tmp_path / "proj"))
    assert order[0] == "ingest@digits" and order[-1] == "compare"
    for run in yaml.safe_load((REPO / "params.yaml").read_text())["runs"]:
        assert order.index("validate@digits") < order.index(f"pretrain@{run}") < order.index(f"evaluate@{run}")
        assert order.index("tokenizer@digits") < order.index(f"pretrain@{run}")
    assert order.index("baselines@digits") < order.index("compare")


def test_source_files_are_the_projects_sources() -> None:
    files = source_files(REPO)
    assert "dvc.yaml" in files and ".dvc/config" in files and "ssl_tasks/pipeline/cli.py" in files
    assert "params.yaml" not in files and "dvc.lock" not in files  # a workspace writes its own
    assert not any(f.startswith(("data/", "artifacts/", "mlflow/", "workspaces/", ".venv/")) for f in files)


def test_one_flow_run_per_workspace(tmp_path: Path) -> None:
    from flows.pipeline import _workspace_lock

    with _workspace_lock(tmp_path / "ws"):
        with pytest.raises(RuntimeError, match="in use by another flow run"):
            with _workspace_lock(tmp_path / "ws"):
                pass
    with _workspace_lock(tmp_path / "ws"):  # released
        pass
