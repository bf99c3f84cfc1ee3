"""Every registered objective trains under DistributedDataParallel with two gloo workers, and the workers'
replicas stay identical (what Ray Train runs with ``num_workers: 2``; tested here without Ray's start-up)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from objective_cases import CASES, spec_for

from ssl_tasks.objectives import OBJECTIVES
from ssl_tasks.training.config import TrainConfig, TrainJob, job_to_dict, objective_config

pytestmark = pytest.mark.slow


class _DDPSession:
    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size, self.device = rank, world_size, torch.device("cpu")
        self.reports: list[dict[str, float]] = []

    def latest_checkpoint(self) -> Path | None:
        return None

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        self.reports.append(metrics)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, jobs: list[dict], out: dict) -> None:
    import torch.distributed as dist

    from ssl_tasks.training.config import job_from_dict
    from ssl_tasks.training.loop import build_objective, run_training

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    captured: dict[str, torch.nn.Module] = {}
    import ssl_tasks.training.loop as loop

    def keep(job, data):  # noqa: ANN001, ANN202 - record the objective the loop trains
        obj = build_objective(job, data)
        captured[job.run] = obj
        return obj

    loop.build_objective = keep
    for d in jobs:
        job = job_from_dict(d)
        session = _DDPSession(rank, world)
        run_training(job, session)
        params = torch.cat([p.detach().flatten() for p in captured[job.run].parameters()])
        out[(job.run, rank)] = (params, session.reports[-1]["train/loss"])
    dist.destroy_process_group()


def test_every_objective_trains_under_ddp_with_replicas_in_sync(digits_dataset: Path, colour_dataset: Path,
                                                                 beit_tokenizer: Path, text_dataset: Path,
                                                                 text_tokenizer: Path, pair_dataset: Path,
                                                                 pair_tokenizer: Path, graph_dataset: Path,
                                                                 speech_dataset: Path, speech_targets: Path,
                                                                 video_dataset: Path) -> None:
    jobs = []
    names = OBJECTIVES.names()
    for name in names:
        case, spec = CASES[name], spec_for(name)
        kwargs = {**case.objective_kwargs, **({"tokenizer": str(beit_tokenizer)} if name == "beit" else {})}
        data = (video_dataset if case.video else speech_dataset if case.speech else graph_dataset if case.graph
                else pair_dataset if case.pair else text_dataset if case.text else colour_dataset if case.colour
                else digits_dataset)
        mean, std = (((), ()) if case.text or case.graph or case.speech else (spec.image.mean, spec.image.std)
                     if case.pair else (spec.mean, spec.std))
        tok = (str(pair_tokenizer) if case.pair else str(text_tokenizer) if case.text
               else str(speech_targets) if name == "hubert" else "")
        job = TrainJob(run=name, seed=0, data_dir=str(data), objective=name,
                       objective_config=objective_config(name, kwargs),
                       encoder=case.encoder, encoder_kwargs=case.encoder_kwargs, mean=mean, std=std, tokenizer=tok,
                       train=TrainConfig(epochs=1, batch_size=16 if case.speech or case.video
                                         else 32 if case.colour or case.text or case.pair else 64,
                                         warmup_epochs=0))
        jobs.append(job_to_dict(job))
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(2, _free_port(), jobs, out), nprocs=2, join=True)
    for name in names:
        (p0, loss0), (p1, _) = out[(name, 0)], out[(name, 1)]
        assert torch.isfinite(torch.tensor(loss0)), name
        assert torch.equal(p0, p1), f"{name}: replicas diverged under DDP"
