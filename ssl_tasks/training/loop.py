"""The framework-free training loop: views on device, one step result, EMA after the step.

``run_training(job, session)`` knows nothing of Ray or MLflow: a ``Session`` supplies rank,
device, the checkpoint to resume from, and where per-epoch reports go.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ssl_tasks.core.ema import update_momentum
from ssl_tasks.core.encoders import ENCODERS
from ssl_tasks.core.errors import UserError
from ssl_tasks.objectives import OBJECTIVES
from ssl_tasks.objectives.base import Objective, check_compatible
from ssl_tasks.training.config import TrainConfig, TrainJob
from ssl_tasks.training.feeds import Feed, open_feed, steps_per_epoch
from ssl_tasks.training.monitors import embedding_metrics, is_collapsed, is_diverged, weight_norm

CHECKPOINT_FILE = "state.pt"


class Session(Protocol):
    rank: int
    world_size: int
    device: torch.device

    def latest_checkpoint(self) -> Path | None: ...

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None: ...


class LocalSession:
    """Single-process session: checkpoints kept in ``ckpt_dir`` (latest only)."""

    def __init__(self, ckpt_dir: Path, device: str = "cpu") -> None:
        self.rank, self.world_size, self.device = 0, 1, torch.device(device)
        self.ckpt_dir = Path(ckpt_dir)
        self.reports: list[dict[str, float]] = []

    def latest_checkpoint(self) -> Path | None:
        return self.ckpt_dir if (self.ckpt_dir / CHECKPOINT_FILE).is_file() else None

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        self.reports.append(metrics)
        if checkpoint_dir is not None:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            os.replace(checkpoint_dir / CHECKPOINT_FILE, self.ckpt_dir / CHECKPOINT_FILE)


class TrainingStopped(UserError):
    """A verdict on the run, not a crash: the loop stopped it on purpose, with one line saying why.

    Every rank raises it at the same step. Under Ray Train the worker returns the message instead of failing
    (``ray_runner``), so the run is not retried from its last checkpoint only to stop again, and ``fit`` raises it
    again in the driver, where the CLI prints it as one ``error:`` line.
    """


class CollapseError(TrainingStopped):
    """Raised (when configured) as soon as the monitors flag a collapsed representation."""


class NonFiniteLossError(TrainingStopped):
    """Raised at the first step whose loss is nan or infinite, before that step touches the weights."""


def build_objective(job: TrainJob, feed: Feed) -> Objective:
    cls = OBJECTIVES.get(job.objective)
    check_compatible(cls, ENCODERS.get(job.encoder), feed.modality)
    cls.check_data(feed.spec)
    cfg = job.objective_config
    if not isinstance(cfg, cls.Config):
        raise TypeError(f"job {job.run!r}: objective_config is a {type(cfg).__name__}, not {cls.__name__}.Config")
    encoder = feed.build_encoder(job.encoder, job.encoder_kwargs)
    if job.init_encoder:  # before the objective is built, so EMA teachers start from the same weights
        load_encoder(encoder, job.init_encoder, f"runs.{job.run}.init_encoder")
    try:
        return cls(encoder, cfg, feed.spec)
    except ValueError as e:  # a combination the objective refuses (e.g. SimCSE without dropout)
        raise UserError(f"runs.{job.run}: {job.objective}: {e}") from None


def check_job(job: TrainJob) -> None:
    """Build ``job``'s feed, encoder and objective as a worker would, and drop them: run by the pretrain stage
    before Ray starts, so a bad encoder kwarg, an objective value out of range or an encoder that does not fit the
    data (a ViT patch that does not divide the image), or a batch larger than the data is one ``UserError`` before
    any compute."""
    if job.plugins:
        from ssl_tasks.core.plugins import load_plugins

        load_plugins(job.plugins, job.plugin_root)
    feed = open_feed(job)
    build_objective(job, feed)
    _steps(job, feed, job.train.num_workers)


def _steps(job: TrainJob, feed: Feed, world_size: int) -> int:
    """Training steps per epoch; none is a ``UserError``."""
    steps = steps_per_epoch(feed, job.train.batch_size, world_size)
    if steps < 1:
        raise UserError(f"runs.{job.run}: {feed.count()} training samples make no full batch of train.batch_size "
                        f"{job.train.batch_size} x {world_size} worker(s); lower train.batch_size (or num_workers)")
    return steps


def load_encoder(encoder: nn.Module, path: str | Path, where: str) -> None:
    """Load an ``encoder.pt`` state dict (``weights_only``) into ``encoder``; a mismatch is a UserError."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        encoder.load_state_dict(state)
    except FileNotFoundError:
        raise UserError(f"{where}: {path} does not exist") from None
    except (RuntimeError, pickle.UnpicklingError, AttributeError) as e:  # wrong architecture, or not a state dict
        first = str(e).strip().splitlines()[0]
        raise UserError(f"{where}: {path} does not fit the run's encoder: {first}") from None


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Weight decay on weights only (not biases or norm parameters); teachers are excluded."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_at(cfg: TrainConfig, it: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to zero."""
    if it < warmup:
        return cfg.lr * (it + 1) / warmup
    t = (it - warmup) / max(1, total - warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))


def run_training(job: TrainJob, session: Session) -> None:
    """Train ``job`` to completion, resuming from ``session.latest_checkpoint()`` if any."""
    cfg, rank, ws, device = job.train, session.rank, session.world_size, session.device
    if job.plugins:  # a Ray worker is a fresh process: the plug-ins' registrations must happen here too
        from ssl_tasks.core.plugins import load_plugins

        load_plugins(job.plugins, job.plugin_root)
    torch.manual_seed(job.seed)  # identical initialisation on every rank
    feed = open_feed(job)
    objective = build_objective(job, feed).to(device)
    opt = make_optimizer(objective, cfg)
    norm0 = max(weight_norm(objective.eval_encoder), 1e-12)  # seeded, so a resumed attempt gets the same
    start_epoch, history, resumed = 0, [], []
    ckpt = session.latest_checkpoint()
    state = _read_checkpoint(ckpt, device, job.run, rank) if ckpt is not None else None
    if state is not None:
        objective.load_state_dict(state["objective"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, history = int(state["epoch"]), json.loads(state["history"])
        resumed = [*json.loads(state["resumed"]), start_epoch]
        if rank == 0:
            print(f"[{job.run}] resumed from checkpoint at epoch {start_epoch}", flush=True)
    model: nn.Module = objective
    if ws > 1:
        model = nn.parallel.DistributedDataParallel(objective, broadcast_buffers=False)
    steps = _steps(job, feed, ws)
    total, warmup = steps * cfg.epochs, steps * cfg.warmup_epochs
    amp = cfg.precision == "bf16"
    for epoch in range(start_epoch, cfg.epochs):
        g = torch.Generator(device=device)
        g.manual_seed(job.seed * 1_000_003 + epoch * 1009 + rank)
        objective.train()
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        embs: list[tuple[torch.Tensor, torch.Tensor]] = []
        projs: list[tuple[torch.Tensor, torch.Tensor]] = []
        n_emb = 0
        batches = feed.epoch(batch_size=cfg.batch_size, seed=job.seed, epoch=epoch, rank=rank, world_size=ws)
        for step, xb in enumerate(batches):
            it = epoch * steps + step
            for grp in opt.param_groups:
                grp["lr"] = lr_at(cfg, it, total, warmup)
            x = _to_device(xb, device)
            objective.progress = it / max(1, total)
            objective.monitoring = n_emb < cfg.monitor_samples
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                views = objective.make_views(x, g)
                res = model(views)
            loss = res.loss.item()  # the step's one host sync, now before the update rather than after it
            if _any_rank(not math.isfinite(loss), device):  # every rank stops at the same step
                raise NonFiniteLossError(_nonfinite_message(job.run, loss, epoch + 1, step + 1, steps,
                                                            opt.param_groups[0]["lr"]))
            opt.zero_grad(set_to_none=True)
            res.loss.backward()
            objective.after_backward()
            opt.step()
            m = objective.momentum(it / max(1, total))
            for student, teacher in objective.momentum_pairs():
                update_momentum(student, teacher, m)
            sums["train/loss"] = sums.get("train/loss", 0.0) + loss
            for k, v in [*res.terms.items(), *res.report.items()]:  # report: temperature, momentum, accuracy ...
                sums[f"train/{k}"] = sums.get(f"train/{k}", 0.0) + float(v)
            if rank == 0 and steps >= 200 and (step + 1) % (steps // 4) == 0 and step + 1 < steps:
                print(f"[{job.run}] epoch {epoch + 1}/{cfg.epochs}: {step + 1}/{steps} steps, "
                      f"loss {sums['train/loss'] / (step + 1):.4f}", flush=True)
            if res.embeddings is not None and n_emb < cfg.monitor_samples:
                embs.append(res.embeddings)
                if res.projections is not None:
                    projs.append(res.projections)
                n_emb += res.embeddings[0].shape[0]
        dt = time.perf_counter() - t0
        metrics = {k: v / steps for k, v in sums.items()}
        metrics.update({"train/lr": opt.param_groups[0]["lr"], "train/momentum": m, "train/epoch_time_s": dt,
                        "train/samples_per_s": steps * cfg.batch_size * ws / dt, "epoch": float(epoch + 1)})
        if device.type == "cuda":  # this worker's peak, what bench/gpu_check.sh records
            metrics["train/peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        collapsed = False
        ratio = weight_norm(objective.eval_encoder) / norm0
        metrics.update({"monitor/weight_norm_ratio": ratio, "monitor/diverged": float(is_diverged(ratio))})
        if embs:
            mon = _monitor(embs, cfg.monitor_samples)
            collapsed = is_collapsed(mon)
            metrics.update({f"monitor/{k}": v for k, v in mon.items()})
            if projs:
                pmon = _monitor(projs, cfg.monitor_samples)
                collapsed = collapsed or is_collapsed(pmon)
                metrics.update({f"monitor/proj_{k}": v for k, v in pmon.items()})
        own = objective.collapse_reason(metrics)  # the objective's own signal (e.g. codebook perplexity), or None
        judges = type(objective).collapse_reason is not Objective.collapse_reason  # the same on every rank
        if judges:
            metrics["monitor/objective_collapsed"] = float(own is not None)
        if embs or judges:  # rank 0's verdict, broadcast: every rank calls _agree here or none does
            metrics["monitor/collapsed"] = float(_agree(collapsed or own is not None, device))
        history.append(metrics)
        if rank == 0:
            print(f"[{job.run}] epoch {epoch + 1}/{cfg.epochs} loss={metrics['train/loss']:.4f} "
                  f"std={metrics.get('monitor/embedding_std', float('nan')):.3f} "
                  f"erank={metrics.get('monitor/effective_rank', float('nan')):.1f} "
                  f"{metrics['train/samples_per_s']:.0f} samples/s"
                  f"{'  COLLAPSED' if metrics.get('monitor/collapsed') else ''}"
                  f"{f'  DIVERGED (weights x{ratio:.3g})' if metrics['monitor/diverged'] else ''}", flush=True)
        _report(session, objective, opt, epoch + 1, history, resumed, metrics)
        if cfg.stop_on_collapse and metrics.get("monitor/collapsed"):
            raise CollapseError(_collapse_message(job.run, epoch + 1, metrics, own))


CHECKPOINT_KEYS = ("objective", "eval_encoder", "optimizer", "epoch", "history", "resumed")


def _read_checkpoint(ckpt: Path, device: torch.device, run: str, rank: int) -> dict[str, Any] | None:
    """The checkpoint's state, or None (with a warning) when it cannot be read: a resume starts afresh rather than
    crash, and under Ray be retried into the same crash, on a file cut short by a kill mid-write or a full disk."""
    try:
        state = torch.load(ckpt / CHECKPOINT_FILE, map_location=device, weights_only=True)
        if not isinstance(state, dict) or any(k not in state for k in CHECKPOINT_KEYS):
            raise ValueError(f"not a training checkpoint (keys {sorted(state) if isinstance(state, dict) else '-'})")
        json.loads(state["history"]), json.loads(state["resumed"])
        return state
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError) as e:
        if rank == 0:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            print(f"[{run}] warning: checkpoint {ckpt / CHECKPOINT_FILE} cannot be read ({type(e).__name__}: "
                  f"{first}); starting afresh from epoch 0", flush=True)
        return None


def _to_device(xb: Any, device: torch.device) -> Any:
    """A feed's batch (an array, or a tuple of arrays for image–text pairs) as tensors on ``device``."""
    if isinstance(xb, tuple):
        return tuple(torch.from_numpy(np.ascontiguousarray(a)).to(device, non_blocking=True) for a in xb)
    return torch.from_numpy(xb).to(device, non_blocking=True)


def _report(session: Session, objective: Objective, opt: torch.optim.Optimizer, epoch: int,
            history: list[dict[str, float]], resumed: list[int], metrics: dict[str, float]) -> None:
    if session.rank != 0:
        session.report(metrics, None)
        return
    with tempfile.TemporaryDirectory(prefix="ssl-ckpt-") as d:
        state = {
            "objective": objective.state_dict(),
            "eval_encoder": objective.eval_encoder.state_dict(),
            "optimizer": opt.state_dict(),
            "epoch": epoch,
            "history": json.dumps(history),
            "resumed": json.dumps(resumed),  # epochs at which this run resumed from a checkpoint
        }
        torch.save(state, Path(d) / CHECKPOINT_FILE)
        session.report(metrics, Path(d))


def _collapse_message(run: str, epoch: int, m: dict[str, float], own: str | None = None) -> str:
    parts = [f"{where} std {m[f'monitor/{p}embedding_std']:.3f}, effective rank {m[f'monitor/{p}effective_rank']:.2f}"
             for where, p in (("encoder", ""), ("projector", "proj_")) if f"monitor/{p}embedding_std" in m]
    parts += [f"objective: {own}"] if own is not None else []
    return (f"run {run!r} collapsed at epoch {epoch}: " + "; ".join(parts) + " (collapse: std < 0.05 or effective "
            "rank < 1.5); stopped because train.stop_on_collapse is true")


def _nonfinite_message(run: str, loss: float, epoch: int, step: int, steps: int, lr: float) -> str:
    return (f"run {run!r}: loss became {loss} at epoch {epoch}, step {step}/{steps} (lr {lr:.3g}); stopped there: "
            "lower train.lr, raise train.warmup_epochs, or check the data for non-finite values")


def _monitor(pairs: list[tuple[torch.Tensor, torch.Tensor]], n: int) -> dict[str, float]:
    """Collapse monitors over the first ``n`` samples of an epoch's (view 1, view 2) feature pairs."""
    return embedding_metrics(torch.cat([p[0] for p in pairs])[:n], torch.cat([p[1] for p in pairs])[:n])


def _agree(flag: bool, device: torch.device) -> bool:
    """Rank 0's verdict, so every rank stops (or not) together."""
    if dist.is_available() and dist.is_initialized():
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.broadcast(t, src=0)
        return bool(t.item())
    return flag


def _any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` holds on any rank (one small all-reduce per call when distributed)."""
    if dist.is_available() and dist.is_initialized():
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())
    return flag
