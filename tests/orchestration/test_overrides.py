"""Flow parameters -> the params.yaml of a workspace (no Prefect, no flow run)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from ssl_tasks.orchestration.overrides import apply_parameters, check_params, workspace_params

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["datasets"]["other"] = dict(p["datasets"]["digits"])
    p["runs"]["simclr_other"] = {**p["runs"]["simclr"], "dataset": "other", "train": {"epochs": 7}}
    return p


def test_objectives_epochs_workers_and_overrides(raw: dict[str, Any]) -> None:
    before = copy.deepcopy(raw)
    warnings: list[str] = []
    p = apply_parameters(raw, objectives=["byol", "simclr_other"], epochs=2, num_workers=2,
                         overrides={"baselines.supervised_epochs": 3, "evaluation.settings.k": 5,
                                    "runs.simclr.encoder": "resnet18"},  # simclr was dropped: skipped
                         warn=warnings.append)
    assert list(p["runs"]) == ["byol", "simclr_other"] and set(p["datasets"]) == {"digits", "other"}
    assert p["train"]["epochs"] == 2 and p["train"]["num_workers"] == 2
    assert p["runs"]["simclr_other"]["train"]["epochs"] == 2  # a run's own override follows too
    assert p["baselines"]["supervised_epochs"] == 3 and p["evaluation"]["settings"]["k"] == 5
    assert "simclr" not in p["runs"]
    assert warnings == ["overrides: skipping 'runs.simclr.encoder': runs.simclr is not part of this run"]
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
    ({"overrides": {"train..epochs": 1}}, "bad key 'train..epochs'"),
])
def test_bad_parameters_name_the_valid_choices(raw: dict[str, Any], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply_parameters(raw, **kwargs)


def test_library_parser_rejects_bad_nested_keys(raw: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="epoch"):
        check_params(apply_parameters(raw, overrides={"train.epoch": 1}), "test")


def test_workspace_params_from_a_params_file_with_anchored_paths(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    assert workspace_params(tmp_path, None, {}) is None  # nothing to apply: the run stays in the root
    text = yaml.safe_load((REPO / "configs" / "text.yaml").read_text())
    text["datasets"]["sst2"]["path"] = "data-here/sst2"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "mine.yaml").write_text(yaml.safe_dump(text))
    p = workspace_params(tmp_path, "configs/mine.yaml", {"epochs": 3})
    assert p is not None and p["train"]["epochs"] == 3 and set(p["runs"]) == set(text["runs"])
    assert p["datasets"]["sst2"]["path"] == str((tmp_path / "data-here" / "sst2").resolve())
    with pytest.raises(ValueError, match="params_file 'configs/none.yaml': no such file"):
        workspace_params(tmp_path, "configs/none.yaml", {})
    with pytest.raises(ValueError, match=r"params.yaml with the flow parameters: .*epoch"):
        workspace_params(tmp_path, None, {"overrides": {"train.epoch": 1}})
