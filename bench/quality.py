"""Quality benchmark: each objective vs random init (same encoder) and raw pixels, under a fixed CPU budget.

Runs the pipeline's own pieces (ingest, the training loop, the visual tokenizer, the evaluation protocols) in
one process, so the figures measure the methods, not orchestration. Recipes: ``bench/recipes.py``. Usage:

    python bench/quality.py --data fashion_mnist --epochs 3 --out bench/results/zoo_fashion_mnist.json
    python bench/quality.py --data cifar10_jpeg --objectives simclr byol dino mae colorization --epochs 4

``fashion_mnist`` is the official 60,000 / 10,000 split; ``cifar10_jpeg`` (the 10,000 CIFAR-10 test JPEGs) is
split 80/20, stratified, with ``--split-seed``. Rows are written after each objective, so an interrupted run
keeps what finished; ``--objectives`` reruns only those rows.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from provenance import cpu_model, earlier_provenance, provenance  # bench/ is on sys.path when run as a script
from recipes import RECIPES, VIEWS, Recipe  # bench/ is on sys.path when run as a script

from ssl_tasks.data.ingest import ingest
from ssl_tasks.evaluation.protocols import EvalConfig, evaluate_encoder
from ssl_tasks.modalities.image.encoders import build_encoder
from ssl_tasks.modalities.image.feed import channel_stats
from ssl_tasks.modalities.image.shards import ImageDataset
from ssl_tasks.modalities.image.views import ImageViewConfig, ImageViews
from ssl_tasks.modalities.image.visual_tokenizer import train_tokenizer
from ssl_tasks.training.config import TrainConfig, TrainJob, objective_config
from ssl_tasks.training.loop import LocalSession, run_training
from ssl_tasks.training.supervised import train_supervised

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
FASHION = SHARED / "fashion_mnist"
DATA = {"fashion_mnist": ("idx", FASHION), "cifar10_jpeg": ("image_folder", SHARED / "cifar10_jpeg" /
                                                            "cifar10_test_jpeg.tar")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", choices=sorted(DATA), default="fashion_mnist")
    ap.add_argument("--objectives", nargs="+", default=None, help="default: every recipe the data supports")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--protocols", nargs="+", default=["knn", "linear", "semi_1pct", "semi_10pct"])
    ap.add_argument("--linear-epochs", type=int, default=100)
    ap.add_argument("--finetune-epochs", type=int, default=20)
    ap.add_argument("--split-seed", type=int, default=0, help="stratified 80/20 split seed (cifar10_jpeg)")
    ap.add_argument("--skip-baselines", action="store_true")
    ap.add_argument("--baselines", nargs="+", default=["random_init", "raw_pixels", "supervised"],
                    choices=["random_init", "raw_pixels", "supervised"])
    ap.add_argument("--supervised-epochs", type=int, default=5, help="the supervised ceiling's training epochs")
    ap.add_argument("--reuse", metavar="DIR", help="a work dir of an earlier run: objectives with a checkpoint "
                    "there are evaluated, not retrained, and only the protocols asked for are (re)computed")
    ap.add_argument("--recipe", default="{}", help='JSON objective-kwargs overrides, e.g. {"simclr": {"temperature": 0.1}}')
    ap.add_argument("--tag", default="", help="suffix for the result rows (pilot runs)")
    ap.add_argument("--out", default=None, help="default: bench/results/zoo_<data>.json")
    ap.add_argument("--render", metavar="JSON", help="print a results file as the Markdown table of RESULTS.md, exit")
    args = ap.parse_args()
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return
    out = Path(args.out or REPO / "bench" / "results" / f"zoo_{args.data}.json")

    work = Path(args.reuse) if args.reuse else Path(tempfile.mkdtemp(prefix=f"bench-{args.data}-"))
    data = work / args.data
    source, path = DATA[args.data]
    if not (data / "manifest.json").is_file():
        ingest(source, path, data, test_fraction=0.2, split_seed=args.split_seed)
    ds = ImageDataset(data)
    channels, size = ds.image_shape[0], ds.image_shape[1]
    mean, std = channel_stats(ds)
    train, test = ds.load("train"), ds.load("test")
    ecfg = EvalConfig(linear_epochs=args.linear_epochs, finetune_epochs=args.finetune_epochs, finetune_batch_size=128)
    fviews = ImageViews(ImageViewConfig(crop_scale=(0.6, 1.0), jitter_p=0.0, grayscale_p=0.0), torch.tensor(mean),
                        torch.tensor(std), size)
    names = args.objectives or [n for n, r in RECIPES.items() if channels == 3 or not r.needs_colour]
    unknown = sorted(set(names) - set(RECIPES))
    if unknown:
        ap.error(f"unknown objectives {unknown}; valid: {sorted(RECIPES)}")

    def evaluate(encoder: torch.nn.Module | None, label: str) -> dict[str, float]:
        t0 = time.perf_counter()
        m, _ = evaluate_encoder(encoder, train, test, num_classes=ds.num_classes, mean=mean, std=std,
                                protocols=args.protocols, cfg=ecfg, finetune_views=fviews,
                                progress=lambda s: print(f"  [{label}] {s}", flush=True))
        print(f"{label}: {m} (eval {time.perf_counter() - t0:.0f} s)", flush=True)
        return {**m, "eval_seconds": round(time.perf_counter() - t0, 1)}

    results: dict[str, dict] = json.loads(out.read_text()).get("rows", {}) if out.is_file() else {}
    meta = {"machine": f"{cpu_model()}, {torch.get_num_threads()} threads",
            "data": args.data, "split_seed": args.split_seed, "counts": {k: ds.count(k) for k in ("train", "test")},
            "args": vars(args), "provenance": provenance(args), "earlier_provenance": earlier_provenance(out)}

    def merge(key: str, row: dict) -> None:  # an earlier row keeps the protocols not recomputed now
        old = results.get(key, {})
        results[key] = {**old, **row, "metrics": {**old.get("metrics", {}), **row.get("metrics", {})}}
        _write(out, results, meta)

    encoders = sorted({(RECIPES[n].encoder, json.dumps(RECIPES[n].encoder_kwargs, sort_keys=True)) for n in names})
    for kind in [] if args.skip_baselines else args.baselines:
        if kind == "raw_pixels":
            merge("raw_pixels", {"metrics": evaluate(None, "raw_pixels")})
            continue
        for enc_name, enc_kwargs in encoders:
            torch.manual_seed(0)
            encoder = build_encoder(enc_name, channels, size, **json.loads(enc_kwargs))
            row: dict = {"encoder": enc_name, "encoder_kwargs": json.loads(enc_kwargs)}
            if kind == "supervised":  # the ceiling: the same encoder trained on every training label
                lr = next(RECIPES[n].lr for n in names if RECIPES[n].encoder == enc_name)
                sviews = ImageViews(ImageViewConfig(**VIEWS), torch.tensor(mean), torch.tensor(std), size)
                t0 = time.perf_counter()
                train_supervised(encoder, *train, num_classes=ds.num_classes, views=sviews,
                                 epochs=args.supervised_epochs, lr=lr, batch_size=args.batch_size, seed=0)
                row.update(train_seconds=round(time.perf_counter() - t0, 1), epochs=args.supervised_epochs, lr=lr)
            merge(f"{kind}_{enc_name}{args.tag}", {**row, "metrics": evaluate(encoder, f"{kind}_{enc_name}")})
    overrides = json.loads(args.recipe)
    for name in names:
        recipe: Recipe = RECIPES[name]
        kwargs = {**recipe.objective_kwargs, **overrides.get(name, {})}
        session = LocalSession(work / f"ckpt-{name}")
        row = {}
        if not (args.reuse and session.latest_checkpoint() is not None):
            if name == "beit":  # the tokenizer stage, in-process: k-means over the encoder's patches
                patch = recipe.encoder_kwargs["patch_size"]
                summary = train_tokenizer(data, work / "tokenizer.pt", patch_size=patch, num_codes=256, seed=0)
                print(f"tokenizer: {summary}", flush=True)
                kwargs = {"tokenizer": str(work / "tokenizer.pt"), **kwargs}
            cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=recipe.lr, warmup_epochs=1)
            job = TrainJob(run=name, seed=0, data_dir=str(data), objective=name,
                           objective_config=objective_config(name, kwargs),
                           encoder=recipe.encoder, encoder_kwargs=recipe.encoder_kwargs, train=cfg, mean=mean, std=std)
            t0 = time.perf_counter()
            run_training(job, session)
            last = session.reports[-1]
            row = {"train_seconds": round(time.perf_counter() - t0, 1), "epochs": args.epochs,
                   "encoder": recipe.encoder, "encoder_kwargs": recipe.encoder_kwargs, "lr": recipe.lr,
                   "recipe": kwargs, "samples_per_s": round(last["train/samples_per_s"], 1),
                   "collapsed": bool(last.get("monitor/collapsed")), "final_loss": round(last["train/loss"], 4)}
        elif f"{name}{args.tag}" not in results:
            raise SystemExit(f"{name}: checkpoint in {args.reuse} but no row in {out} to reuse its training record")
        state = torch.load(session.latest_checkpoint() / "state.pt", weights_only=True)
        enc = build_encoder(recipe.encoder, channels, size, **recipe.encoder_kwargs)
        enc.load_state_dict(state["eval_encoder"])
        merge(f"{name}{args.tag}", {**row, "metrics": evaluate(enc, name)})


def render(result: dict) -> str:
    """Markdown: one row per objective with its encoder's random-init row as reference; best of each column bold."""
    cols = ["knn/top1", "linear/top1", "semi_1pct/top1", "semi_10pct/top1"]
    rows = result["rows"]
    lines = ["| row | encoder | " + " | ".join(cols) + " | beats random init on | train s | samples/s |",
             "|---|---|" + "---|" * (len(cols) + 3)]
    for name, r in rows.items():
        enc = r.get("encoder", "-")
        baseline = name.startswith(("random_init", "raw", "supervised"))
        ref = {} if baseline else rows.get(f"random_init_{enc}", {}).get("metrics", {})
        wins = [c.split("/")[0] for c in cols if c in ref and r["metrics"].get(c, 0) > ref[c]]
        cells = [f"{r['metrics'][c]:.4f}" if c in r["metrics"] else "-" for c in cols]
        beat = ", ".join(wins) if ref else "-"
        if ref and not wins:
            beat = "**none**"
        lines.append(f"| {name}{' (collapsed)' if r.get('collapsed') else ''} | {enc} | " + " | ".join(cells) +
                     f" | {beat} | {r.get('train_seconds', '-')} | {r.get('samples_per_s', '-')} |")
    return "\n".join(lines)


def _write(out: Path, rows: dict, meta: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
