"""A test plug-in: SimCLR that kills (or pauses) its own Ray worker once, on cue.

The fault tests inject failures from outside the library this way, through the ``plugins`` mechanism (a
``TrainJob`` names this module; every Ray worker imports it), instead of a test-only hook in the training loop.
Never imported by the test process itself: its objective would join the objective contract test's registry.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ssl_tasks.core.distributed import world
from ssl_tasks.objectives.base import OBJECTIVES, StepResult
from ssl_tasks.objectives.simclr import SimCLR, SimCLRConfig


@dataclass(frozen=True)
class FaultySimCLRConfig(SimCLRConfig):
    fault_rank: int = 0  # the worker that fails
    fault_after_steps: int = 0  # ... once it has taken this many training steps in its process
    marker: str = ""  # written just before the fault; an existing marker means it already happened
    delay_s: float = 0.0  # wait this long first (lets the controller register the last checkpoint)
    kill: bool = True  # False: only pause (for a test that kills the whole node instead)


@OBJECTIVES.register("faulty_simclr")
class FaultySimCLR(SimCLR):
    Config = FaultySimCLRConfig

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.steps_taken = 0

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        if self.training:
            self._maybe_fault()
            self.steps_taken += 1
        return super().forward(views)

    def _maybe_fault(self) -> None:
        cfg = self.cfg
        if world()[0] != cfg.fault_rank or self.steps_taken != cfg.fault_after_steps or not cfg.marker:
            return
        marker = Path(cfg.marker)
        if marker.exists():
            return
        marker.write_text("killed\n" if cfg.kill else "paused\n")
        time.sleep(cfg.delay_s)
        if cfg.kill:
            os.kill(os.getpid(), signal.SIGKILL)
