"""Fashion-MNIST quality benchmark: each objective vs random init and raw pixels, under a fixed CPU budget.

Runs the pipeline's own pieces (ingest, the training loop, the evaluation protocols) in one process,
so the figures measure the methods, not orchestration. Usage:

    python bench/fashion_mnist.py --objectives simclr moco_v2 byol --epochs 8 --out bench/results/fashion_mnist.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from ssl_tasks.data.ingest import ingest
from ssl_tasks.data.shards import ImageDataset
from ssl_tasks.evaluation.protocols import EvalConfig, evaluate_encoder
from ssl_tasks.modalities.image.encoders import build_encoder
from ssl_tasks.modalities.image.views import ImageViewConfig, ImageViews
from ssl_tasks.training.config import TrainConfig, TrainJob
from ssl_tasks.training.loop import LocalSession, channel_stats, run_training

REPO = Path(__file__).resolve().parents[1]
FASHION = REPO.parent / "shared" / "data" / "fashion_mnist"
VIEWS = {"crop_scale": [0.3, 1.0], "hflip_p": 0.5, "jitter_p": 0.8, "brightness": 0.4, "contrast": 0.4}
RECIPES = {
    "simclr": {"temperature": 0.2, "views": VIEWS},
    "moco_v2": {"queue_size": 4096, "momentum": 0.99, "temperature": 0.2, "symmetric": True, "views": VIEWS},
    "byol": {"base_momentum": 0.99, "views": VIEWS},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objectives", nargs="+", default=list(RECIPES))
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--protocols", nargs="+", default=["knn", "linear", "semi_1pct", "semi_10pct"])
    ap.add_argument("--finetune-epochs", type=int, default=20)
    ap.add_argument("--skip-baselines", action="store_true")
    ap.add_argument("--recipe", default="{}", help='JSON overrides per objective, e.g. {"simclr": {"temperature": 0.1}}')
    ap.add_argument("--encoder-kwargs", default="{}", help='JSON small_cnn kwargs beyond width, e.g. {"pool": 2}')
    ap.add_argument("--tag", default="", help="suffix for the result rows (pilot runs)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "fashion_mnist.json"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-fmnist-"))
    data = work / "fashion_mnist"
    ingest("idx", FASHION, data)
    ds = ImageDataset(data)
    mean, std = channel_stats(ds)
    train, test = ds.load("train"), ds.load("test")
    ecfg = EvalConfig(finetune_epochs=args.finetune_epochs, finetune_batch_size=128)
    fviews = ImageViews(ImageViewConfig(crop_scale=(0.6, 1.0), jitter_p=0.0, grayscale_p=0.0), torch.tensor(mean),
                        torch.tensor(std), 28)

    def evaluate(encoder: torch.nn.Module | None, label: str) -> dict[str, float]:
        t0 = time.perf_counter()
        m, _ = evaluate_encoder(encoder, train, test, num_classes=10, mean=mean, std=std, protocols=args.protocols,
                                cfg=ecfg, finetune_views=fviews, progress=lambda s: print(f"  [{label}] {s}", flush=True))
        print(f"{label}: {m} (eval {time.perf_counter() - t0:.0f} s)", flush=True)
        return m

    enc_kwargs = {"width": args.width, **json.loads(args.encoder_kwargs)}
    results: dict[str, dict] = {}
    out = Path(args.out)
    if out.is_file():
        results = json.loads(out.read_text()).get("rows", {})
    if not args.skip_baselines:
        torch.manual_seed(0)
        results["random_init" + args.tag] = {"metrics": evaluate(build_encoder("small_cnn", 1, 28, **enc_kwargs),
                                                                  "random_init" + args.tag)}
        results["raw_pixels"] = {"metrics": evaluate(None, "raw_pixels")}
    overrides = json.loads(args.recipe)
    for name in args.objectives:
        recipe = {**RECIPES[name], **overrides.get(name, {})}
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, warmup_epochs=1)
        job = TrainJob(run=name, seed=0, data_dir=str(data), objective=name, objective_kwargs=recipe,
                       encoder="small_cnn", encoder_kwargs=enc_kwargs, train=cfg, mean=mean, std=std)
        session = LocalSession(work / f"ckpt-{name}")
        t0 = time.perf_counter()
        run_training(job, session)
        train_s = time.perf_counter() - t0
        state = torch.load(session.latest_checkpoint() / "state.pt", weights_only=True)
        enc = build_encoder("small_cnn", 1, 28, **enc_kwargs)
        enc.load_state_dict(state["eval_encoder"])
        row = f"{name}{args.tag}"
        results[row] = {"metrics": evaluate(enc, row), "train_seconds": round(train_s, 1), "epochs": args.epochs,
                         "encoder_kwargs": enc_kwargs, "recipe": recipe, "samples_per_s": round(session.reports[-1]["train/samples_per_s"], 1)}
        _write(out, results, args)
    _write(out, results, args)


def _write(out: Path, rows: dict, args: argparse.Namespace) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
                               "args": vars(args), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
