"""Typed training settings (the ``train`` section of params.yaml) and the job a worker runs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal


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
    """Everything one worker needs, as plain data (it crosses process boundaries)."""

    run: str
    seed: int
    data_dir: str
    objective: str
    objective_kwargs: dict[str, Any]
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
