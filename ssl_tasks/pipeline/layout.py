"""Where every stage reads and writes, the progress printer, and the evaluation settings the stages share."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssl_tasks.core.modality import EvalContext


@dataclass(frozen=True)
class Layout:
    """Paths relative to the project (or workspace) root."""

    root: Path

    def data(self, ds: str) -> Path:
        return self.root / "data" / ds

    def validation_report(self, ds: str) -> Path:
        return self.root / "reports" / "validate" / f"{ds}.json"

    def validation_docs(self, ds: str) -> Path:
        return self.root / "reports" / "validate" / f"{ds}_docs"

    def tokenizer_dir(self, ds: str) -> Path:
        return self.root / "artifacts" / "tokenizers" / ds

    def pretrain_dir(self, run: str) -> Path:
        return self.root / "artifacts" / "runs" / run / "pretrain"

    def eval_dir(self, run: str) -> Path:
        return self.root / "artifacts" / "runs" / run / "eval"

    def baselines_dir(self, ds: str) -> Path:
        return self.root / "artifacts" / "baselines" / ds

    def eval_metrics(self, name: str) -> Path:
        return self.root / "metrics" / "eval" / f"{name}.json"

    def leaderboard(self, ext: str) -> Path:
        return self.root / "artifacts" / f"leaderboard.{ext}"

    @property
    def ray_storage(self) -> Path:
        return self.root / "artifacts" / ".ray"


def say(msg: str) -> None:
    """A timestamped progress line on stderr."""
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def eval_context(params: Any, stage: str) -> EvalContext:
    """The evaluation settings of ``params`` for a modality's protocols, progress lines prefixed with ``stage``."""
    ev = params.evaluation
    return EvalContext(protocols=tuple(ev.protocols), settings=ev.settings, finetune_views=ev.finetune_views,
                       zero_shot=ev.zero_shot, seed=params.seed, batch_size=params.train.batch_size,
                       say=lambda line: say(f"{stage} {line}"))
