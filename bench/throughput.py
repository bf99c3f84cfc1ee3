"""Training-step throughput (samples/s) on this CPU: our loop vs a plain PyTorch loop vs lightly.

SimCLR (Chen et al. 2020, arXiv:2002.05709) with the small CNN (width 16) on Fashion-MNIST 28x28,
batch 256, the Fashion-MNIST benchmark's view recipe. Contenders run interleaved in one process
(A, B, C, A, B, C, ...), each round a fixed number of steps after one untimed warm-up round, so
drift of a shared machine hits all of them alike; medians and ratios are reported.

* ``ours``: ``run_training`` on a subset of ``steps x batch`` images, one epoch, read from
  ``train/samples_per_s`` (data reading, on-device views, step, momentum and monitor bookkeeping;
  the end-of-epoch monitor metrics and checkpoint are outside it, but inside ``wall_samples_per_s``).
* ``plain``: the same objective object, views and AdamW in a bare loop over an in-memory uint8 tensor.
* ``lightly_w0`` / ``lightly_w2``: lightly's ``SimCLRTransform`` on PIL images, a ``LightlyDataset``
  and a ``DataLoader`` (0 or 2 workers), ``SimCLRProjectionHead``, ``NTXentLoss``, two forward
  passes per step as in lightly's ``examples/pytorch/simclr.py``; the faster one is ``lightly``.

    python bench/throughput.py --steps 20 --rounds 5 --objectives --out bench/results/throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from PIL import Image
from provenance import cpu_model, provenance  # bench/ is on sys.path when run as a script
from quality import FASHION  # bench/ is on sys.path when run as a script
from recipes import RECIPES, VIT

from ssl_tasks.data.ingest import ingest
from ssl_tasks.modalities.image.encoders import SmallCNN
from ssl_tasks.modalities.image.feed import channel_stats
from ssl_tasks.modalities.image.shards import ImageDataset, SplitData, write_dataset
from ssl_tasks.training.config import TrainConfig, TrainJob, objective_config
from ssl_tasks.training.feeds import open_feed
from ssl_tasks.training.loop import LocalSession, build_objective, make_optimizer, run_training

REPO = Path(__file__).resolve().parents[1]
GOALS = {"ours/plain": 0.95, "ours/lightly": 1.35}
Round = Callable[[int], dict[str, float]]  # steps -> {"samples_per_s": ..., ...}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per contender per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="lightly DataLoader num_workers to try")
    ap.add_argument("--objectives", nargs="*", default=None,
                    help="also time our loop per objective (no names: every grayscale-capable recipe)")
    ap.add_argument("--objective-encoder", choices=["recipe", "vit"], default="recipe",
                    help="objectives table: each recipe's encoder, or the same small ViT for every objective")
    ap.add_argument("--no-contenders", action="store_true", help="only the --objectives table")
    ap.add_argument("--layouts", nargs="*", default=None, metavar="OBJECTIVE",
                    help="also time our loop per objective with the encoder's weights channels-last (the default) "
                         "vs NCHW (no names: simclr)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "throughput.json"))
    args = ap.parse_args()
    if args.steps < 1 or args.rounds < 1:
        ap.error("--steps and --rounds must be >= 1")
    everyone = [n for n, r in RECIPES.items() if not r.needs_colour and n != "beit"]  # beit: quality.py's tokenizer
    objectives = None if args.objectives is None else (args.objectives or everyone)
    unknown = sorted(set(objectives or []) - set(RECIPES))
    if unknown:
        ap.error(f"unknown objectives {unknown}; valid: {sorted(RECIPES)}")
    args.objectives = objectives
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as d:
        result = measure(args, objectives, Path(d))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    _print_summary(result)
    print(f"wrote {out}")


def measure(args: argparse.Namespace, objectives: list[str] | None, work: Path) -> dict[str, Any]:
    """Ingest once, time the contenders (and the objectives table) interleaved; the result as JSON-ready data."""
    full = work / "fashion_mnist"
    ingest("idx", FASHION, full)
    images = ImageDataset(full).load("train")[0]  # (N, 1, 28, 28) uint8
    if args.steps * args.batch_size > len(images):
        raise SystemExit(f"--steps x --batch-size must be <= {len(images)} train images")
    mean, std = channel_stats(ImageDataset(full))
    subset = _write_subset(work / "subset", images[: args.steps * args.batch_size])
    result: dict[str, Any] = {"machine": _machine(), "args": vars(args), "provenance": provenance(args), "mean": mean, "std": std,
                              "recipes": {n: asdict(RECIPES[n]) for n in ["simclr", *(objectives or [])]},
                              "lightly_transform": lightly_transform_kwargs(mean, std)}

    def job(name: str, recipe_encoder: bool = False) -> TrainJob:
        """The contenders' job (small_cnn of ``--width``, global pooling), or the recipe's / the ViT's."""
        cfg = TrainConfig(epochs=1, batch_size=args.batch_size, lr=args.lr, warmup_epochs=1)
        r = RECIPES[name]
        enc, enc_kwargs = ("small_cnn", {"width": args.width}) if not recipe_encoder else (
            (r.encoder, r.encoder_kwargs) if args.objective_encoder == "recipe" else ("vit", VIT))
        return TrainJob(run=name, seed=0, data_dir=str(subset), objective=name,
                        objective_config=objective_config(name, r.objective_kwargs),
                        encoder=enc, encoder_kwargs=enc_kwargs, train=cfg, mean=mean, std=std)

    if not args.no_contenders:
        contenders: dict[str, Round] = {"ours": ours_round(job("simclr"), work),
                                        "plain": plain_round(job("simclr"), images, args.batch_size)}
        for nw in args.workers:
            contenders[f"lightly_w{nw}"] = lightly_round(images, mean, std, args, nw)
        rows = interleave(contenders, args.steps, args.rounds)
        result["contenders"] = rows
        result.update(_ratios(rows))
    if args.layouts is not None:
        result["layouts"] = {}
        for n in args.layouts or ["simclr"]:
            base = job(n, recipe_encoder=True)
            nchw = replace(base, encoder_kwargs={**base.encoder_kwargs, "channels_last": False})
            rows = interleave({"channels_last": ours_round(base, work), "nchw": ours_round(nchw, work)},
                              args.steps, args.rounds)
            speedup = rows["channels_last"]["median_samples_per_s"] / rows["nchw"]["median_samples_per_s"]
            result["layouts"][n] = {**rows, "encoder": base.encoder, "encoder_kwargs": base.encoder_kwargs,
                                    "channels_last/nchw": round(speedup, 3)}
    if objectives:
        result["objectives"] = interleave({n: ours_round(job(n, recipe_encoder=True), work) for n in objectives},
                                          args.steps, args.rounds)
        for n, row in result["objectives"].items():
            row["encoder"] = job(n, recipe_encoder=True).encoder
    result["machine"]["loadavg_end"] = os.getloadavg()
    return result


def interleave(contenders: dict[str, Round], steps: int, rounds: int) -> dict[str, dict[str, Any]]:
    """One untimed warm-up round each, then ``rounds`` rounds of A, B, C, ...; per-round figures and medians."""
    for name, fn in contenders.items():
        print(f"warm-up {name}", flush=True)
        fn(steps)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
    for r in range(rounds):
        for name, fn in contenders.items():
            runs[name].append(fn(steps))
            print(f"round {r + 1}/{rounds} {name}: {runs[name][-1]['samples_per_s']:.0f} samples/s", flush=True)
    rows = {}
    for name, rs in runs.items():
        row: dict[str, Any] = {}
        for key in rs[0]:
            vals = [x[key] for x in rs]
            row[key] = [round(v, 1) for v in vals]
            row[f"median_{key}"] = round(statistics.median(vals), 1)
        rows[name] = row
    return rows


def ours_round(job: TrainJob, work: Path) -> Round:
    """(a) The pipeline's own loop, two epochs of ``steps`` batches, fresh checkpoint dir each round.

    ``samples_per_s`` is the second epoch's: the loop builds its objective and optimizer afresh every round,
    so its first steps pay one-off costs (optimizer state allocation, allocator warm-up) that the plain loop,
    built once and warmed up, does not; the second epoch is the steady state that a real run lives in.
    ``wall_samples_per_s`` covers everything, both epochs, checkpoints and monitors included.
    """
    job = replace(job, train=replace(job.train, epochs=2, warmup_epochs=1))

    def run(steps: int) -> dict[str, float]:
        session = LocalSession(Path(tempfile.mkdtemp(prefix=f"ckpt-{job.run}-", dir=work)))
        t0 = time.perf_counter()
        run_training(job, session)
        wall = time.perf_counter() - t0
        n = sum(r["train/samples_per_s"] * r["train/epoch_time_s"] for r in session.reports)  # samples trained
        return {"samples_per_s": session.reports[-1]["train/samples_per_s"], "first_epoch_samples_per_s":
                session.reports[0]["train/samples_per_s"], "wall_samples_per_s": n / wall}

    return run


def plain_round(job: TrainJob, images: np.ndarray, batch: int) -> Round:
    """(b) Same objective, views and optimizer in a bare loop over an in-memory uint8 tensor."""
    torch.manual_seed(job.seed)
    x_all = torch.from_numpy(images)  # (N, C, H, W) uint8
    objective = build_objective(job, open_feed(job))
    objective.train()
    opt = make_optimizer(objective, job.train)
    g = torch.Generator().manual_seed(0)

    def run(steps: int) -> dict[str, float]:
        perm = torch.randperm(len(x_all), generator=g)
        t0 = time.perf_counter()
        for i in range(steps):
            x = x_all[perm[i * batch : (i + 1) * batch]]  # (B, C, H, W)
            res = objective(objective.make_views(x, g))
            opt.zero_grad(set_to_none=True)
            res.loss.backward()
            opt.step()
        return {"samples_per_s": steps * batch / (time.perf_counter() - t0)}

    return run


class PILImages(torchvision.datasets.VisionDataset):
    """Grayscale uint8 images served as PIL, the way torchvision's FashionMNIST serves them."""

    def __init__(self, images: np.ndarray) -> None:
        super().__init__(root=None)
        self.images = images  # (N, 1, H, W) uint8

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img = Image.fromarray(self.images[i, 0])  # mode "L"
        return (self.transform(img) if self.transform is not None else img), 0


def lightly_round(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...],
                  args: argparse.Namespace, num_workers: int) -> Round:
    """(c) The lightly way: SimCLRTransform -> LightlyDataset -> DataLoader -> backbone + head -> NTXentLoss."""
    from lightly.data import LightlyDataset
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform

    transform = SimCLRTransform(**lightly_transform_kwargs(mean, std))
    dataset = LightlyDataset.from_torch_dataset(PILImages(images), transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=num_workers)
    torch.manual_seed(0)
    backbone = SmallCNN(1, 28, width=args.width)
    model = torch.nn.Sequential(backbone, SimCLRProjectionHead(backbone.out_dim, 512, 128))
    model.train()
    criterion = NTXentLoss(temperature=RECIPES["simclr"].objective_kwargs["temperature"])
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)

    def run(steps: int) -> dict[str, float]:
        t0 = time.perf_counter()  # a fresh iterator per round: workers do not prefetch during other rounds
        it = iter(loader)
        for _ in range(steps):
            x0, x1 = next(it)[0]  # (B, C, S, S) each
            loss = criterion(model(x0), model(x1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        dt = time.perf_counter() - t0
        del it  # shuts the workers down before the next contender's round
        return {"samples_per_s": steps * args.batch_size / dt}

    return run


def lightly_transform_kwargs(mean: tuple[float, ...], std: tuple[float, ...]) -> dict[str, Any]:
    """Our SimCLR views on 1 channel: crop, flip, brightness/contrast jitter; no saturation, hue, grey, blur."""
    v = RECIPES["simclr"].objective_kwargs["views"]
    return {"input_size": 28, "min_scale": v["crop_scale"][0], "hf_prob": v["hflip_p"], "cj_prob": v["jitter_p"],
            "cj_strength": 1.0, "cj_bright": v["brightness"], "cj_contrast": v["contrast"], "cj_sat": 0.0,
            "cj_hue": 0.0, "random_gray_scale": 0.0, "gaussian_blur": 0.0,
            "normalize": {"mean": list(mean), "std": list(std)}}


def _ratios(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Ratios of medians, and medians of per-round (paired) ratios, against each goal."""
    lightly = [k for k in rows if k.startswith("lightly_")]
    best = max(lightly, key=lambda k: rows[k]["median_samples_per_s"]) if lightly else None
    pairs = {"ours/plain": "plain", **({"ours/lightly": best} if best else {})}
    ratios = {}
    for label, other in pairs.items():
        a, b = rows["ours"]["samples_per_s"], rows[other]["samples_per_s"]
        of_medians = rows["ours"]["median_samples_per_s"] / rows[other]["median_samples_per_s"]
        ratios[label] = {"of_medians": round(of_medians, 3),
                         "median_paired": round(statistics.median(x / y for x, y in zip(a, b)), 3),
                         "goal": GOALS[label], "met": of_medians >= GOALS[label]}
    return {"lightly_best": best, "ratios": ratios}


def _write_subset(out: Path, images: np.ndarray) -> Path:
    """The first ``len(images)`` train images as their own dataset, so one epoch is exactly ``steps`` batches."""
    labels = np.full(len(images), -1, dtype=np.int64)
    write_dataset(out, {"train": SplitData(labels, iter([np.ascontiguousarray(images)]))},
                  image_shape=images.shape[1:], label_names=[], source={"name": "fashion_mnist_subset"})
    return out


def _machine() -> dict[str, Any]:
    import lightly

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "torchvision": torchvision.__version__, "lightly": lightly.__version__,
            "numpy": np.__version__, "loadavg_start": os.getloadavg()}


def _print_summary(result: dict[str, Any]) -> None:
    for table in ("contenders", "objectives"):
        for name, row in result.get(table, {}).items():
            print(f"{table[:-1]:>10} {name:<12} median {row['median_samples_per_s']:>8.1f} samples/s  "
                  f"rounds {row['samples_per_s']}")
    for label, r in result.get("ratios", {}).items():
        print(f"{label}: {r['of_medians']:.3f} (paired {r['median_paired']:.3f}; goal >= {r['goal']}, "
              f"{'met' if r['met'] else 'NOT met'})")
    for name, r in result.get("layouts", {}).items():
        print(f"layout {name}: channels_last {r['channels_last']['median_samples_per_s']:.1f} vs nchw "
              f"{r['nchw']['median_samples_per_s']:.1f} samples/s -> {r['channels_last/nchw']:.3f}x")


if __name__ == "__main__":
    main()
