"""Typed training settings (the ``train`` section of params.yaml), the job a worker runs, and the only places an
objective's typed ``Config`` or a ``TrainJob`` is rebuilt from plain data.

Params become typed once, at the edge (``pipeline.params.parse_params``), and stay typed down to the Ray
boundary. Plain data comes back in exactly two ways, both here: a ``TrainJob`` crossing into a Ray worker
(``job_to_dict`` / ``job_from_dict``), and a later stage reading a finished run's ``meta.json``
(``objective_config_from``). ``tests/core/test_package_shape.py`` keeps it that way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ssl_tasks.core.config import build, to_dict


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and execution settings shared by every pretraining run unless overridden."""

    epochs: int = 20
    batch_size: int = 256
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    precision: Literal["fp32", "bf16"] = "fp32"
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: int = 0  # 0: share the machine's cores evenly between workers
    stop_on_collapse: bool = False
    monitor_samples: int = 1024
    max_failures: int = 2

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "num_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"lr must be > 0 and finite, got {self.lr}")


@dataclass(frozen=True)
class TrainJob:
    """Everything one worker needs, typed; ``job_to_dict`` / ``job_from_dict`` carry it across process boundaries."""

    run: str
    seed: int
    data_dir: str
    objective: str
    objective_config: Any  # an instance of the objective class's ``Config`` (``objective_config``)
    encoder: str
    encoder_kwargs: dict[str, Any]
    train: TrainConfig
    mean: tuple[float, ...]
    std: tuple[float, ...]
    tokenizer: str = ""  # text datasets: the tokenizer.json of the dataset's tokenizer stage
    init_encoder: str = ""  # an encoder state dict (encoder.pt) the encoder starts from instead of random init
    plugins: tuple[str, ...] = ()  # params.yaml's plugin modules, imported by every worker before it trains
    plugin_root: str = ""  # the project folder they may live in
    tracking: dict[str, str] = field(default_factory=dict)  # {"uri": ..., "run_id": ...}


def objective_config(objective: str, kwargs: Mapping[str, Any] | None, where: str = "objective_kwargs") -> Any:
    """The typed ``Config`` of the registered ``objective`` from plain kwargs; a mistake is a ``UserError`` naming
    ``where`` (e.g. ``runs.simclr.objective_kwargs``).

    The one place an objective's config is built from a dict: ``parse_params`` (the params file), ``job_from_dict``
    (the Ray boundary) and ``objective_config_from`` (a finished run's ``meta.json``) call it, nothing else does.
    """
    from ssl_tasks.objectives import OBJECTIVES

    return build(OBJECTIVES.get(objective).Config, dict(kwargs or {}), where)


def objective_config_from(meta: Mapping[str, Any]) -> Any:
    """The typed objective config of a finished run from its ``meta.json`` (what the pretrain stage wrote).

    ``objective_config`` holds the run's whole config as parsed from params; a ``meta.json`` written before it
    existed has only the kwargs of params.yaml (``objective_kwargs``), which build the same config.
    """
    data = meta.get("objective_config")
    return objective_config(meta["objective"], meta.get("objective_kwargs") if data is None else data,
                            "objective_kwargs")


def job_to_dict(job: TrainJob) -> dict[str, Any]:
    """A ``TrainJob`` as plain JSON-friendly data, for Ray's ``train_loop_config`` (the only serialisation)."""
    return to_dict(job)


def job_from_dict(d: Mapping[str, Any]) -> TrainJob:
    """The typed ``TrainJob`` of ``job_to_dict``'s data (keys starting with ``_`` are the runner's, not the job's).

    A Ray worker is a fresh process: the job's plug-ins are imported first, since its objective may be one of theirs.
    """
    d = {k: v for k, v in d.items() if not k.startswith("_")}
    if d.get("plugins"):
        from ssl_tasks.core.plugins import load_plugins

        load_plugins(tuple(d["plugins"]), d.get("plugin_root") or None)
    d["objective_config"] = objective_config(d["objective"], d["objective_config"], f"runs.{d['run']}.objective_kwargs")
    d["train"] = build(TrainConfig, d["train"], f"runs.{d['run']}.train")
    d["mean"], d["std"], d["plugins"] = tuple(d["mean"]), tuple(d["std"]), tuple(d.get("plugins", ()))
    return TrainJob(**d)
