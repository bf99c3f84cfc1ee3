"""Fine-tuning benchmark: pretrained vs random init of the same encoder, fine-tuned with the identical budget.

The ``finetune`` protocol (``ssl_tasks/evaluation/protocols.py``: every training label, every encoder parameter,
the views / schedule / precise-BN of the 1% / 10% protocols) on a pretrained encoder and on random init of the
same architecture and initialisation seed, for several fine-tuning seeds (``EvalConfig.seed``: head init, batch
order, augmentation draws). The margin per seed is "what pretraining bought" at equal fine-tuning cost.

Everything runs in one process with the pipeline's own pieces (ingest, the training loop, the protocols), on a
stratified subset of the data so it fits a shared 2-core CPU: ``--train`` images are both the unlabelled
pretraining set and the labelled fine-tuning set (as in the pipeline, where both are the train split),
``--test`` images are scored. Recipes: ``bench/recipes.py``. Usage:

    python bench/finetune.py --data fashion_mnist --objectives simclr byol barlow_twins --train 4000 --test 2000 \\
        --epochs 8 --finetune-epochs 4 --seeds 0 1 2 --out bench/results/finetune_fashion_mnist.json
    python bench/finetune.py --data sst2 --objectives mlm --train 5000 --test 872 --epochs 5 --batch-size 64
    python bench/finetune.py --render bench/results/finetune_fashion_mnist.json

SST-2 (``--data sst2``, objectives ``mlm`` / ``causal_lm``): the train phrases and dev sentences of
``bench/text_quality.py``, its encoder (width 128, depth 2, 64 tokens), a BPE tokenizer trained on the subset.

Rows are ``<name>-s<finetune seed>`` (``random_init_<encoder>-s0``, ``simclr-s0``, ...), written as they finish,
so an interrupted run keeps what finished; ``summary`` holds the mean, sample std and paired margin per encoder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from provenance import provenance  # bench/ is on sys.path when run as a script
from recipes import RECIPES, Recipe  # bench/ is on sys.path when run as a script

from ssl_tasks.core.io import write_json_atomic
from ssl_tasks.data.ingest import ingest
from ssl_tasks.evaluation.protocols import EvalConfig, evaluate_encoder
from ssl_tasks.modalities.image.encoders import build_encoder
from ssl_tasks.modalities.image.feed import channel_stats
from ssl_tasks.modalities.image.shards import ImageDataset, SplitData, write_dataset
from ssl_tasks.modalities.image.views import ImageViewConfig, ImageViews
from ssl_tasks.modalities.text.encoders import build_text_encoder
from ssl_tasks.modalities.text.shards import TextDataset, TextSplit, write_text_dataset
from ssl_tasks.modalities.text.stages import labelled_rows
from ssl_tasks.modalities.text.tokenizer import TextTokenizer, train_text_tokenizer
from ssl_tasks.training.config import TrainConfig, TrainJob, objective_config
from ssl_tasks.training.loop import LocalSession, run_training

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DATA = {"fashion_mnist": ("idx", SHARED / "fashion_mnist"),
        "cifar10_jpeg": ("image_folder", SHARED / "cifar10_jpeg" / "cifar10_test_jpeg.tar"),
        "sst2": ("text_table", SHARED / "sst2")}  # train phrases -> dev sentences, as bench/text_quality.py
TEXT_ENCODER = {"max_len": 64, "width": 128, "depth": 2, "heads": 4}  # bench/text_quality.py's
TEXT_RECIPES = {"mlm": Recipe({}, encoder="text_transformer", encoder_kwargs=dict(TEXT_ENCODER), lr=2e-3),
                "causal_lm": Recipe({}, encoder="causal_transformer", encoder_kwargs=dict(TEXT_ENCODER), lr=2e-3)}


def stratified(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` samples drawn class-proportionally (each class gets round(n * share))."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    take = np.round(counts * n / len(labels)).astype(int)
    picked = [rng.choice(np.flatnonzero(labels == c), size=min(k, cnt), replace=False)
              for c, k, cnt in zip(classes, take, counts)]
    return np.sort(np.concatenate(picked))


def subset_dataset(full: ImageDataset, out: Path, n_train: int, n_test: int, seed: int) -> ImageDataset:
    """A stratified ``n_train`` / ``n_test`` subset of ``full`` written as its own image dataset."""
    splits = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x, y = full.load(split)
        idx = stratified(y, n, seed) if n < len(y) else np.arange(len(y))
        splits[split] = SplitData(labels=y[idx], chunks=iter([x[idx]]))
    write_dataset(out, splits, image_shape=full.image_shape, label_names=full.manifest["label_names"],
                  source={"name": "bench_subset", "of": str(full.root), "train": n_train, "test": n_test,
                          "seed": seed})
    return ImageDataset(out)


def text_subset(work: Path, n_train: int, n_test: int, seed: int) -> tuple[TextDataset, Path]:
    """SST-2 ingested, a stratified ``n_train`` / ``n_test`` subset written as its own text dataset, and a BPE
    tokenizer trained on the subset's training texts (as the pipeline's tokenizer stage would)."""
    ingest("text_table", DATA["sst2"][1], work / "full",
           options={"text_column": "sentence", "label_column": "label", "test_file": "dev.tsv"})
    full = TextDataset(work / "full")
    splits = {}
    for split, n in (("train", n_train), ("test", n_test)):
        texts, y = full.load(split)
        idx = stratified(y, n, seed) if n < len(y) else np.arange(len(y))
        splits[split] = TextSplit([texts[i] for i in idx], y[idx])
    write_text_dataset(work / "data", splits, label_names=full.manifest["label_names"],
                       source={"name": "bench_subset", "of": str(full.root), "train": n_train, "test": n_test,
                               "seed": seed})
    ds = TextDataset(work / "data")
    print("tokenizer:", train_text_tokenizer(ds.iter_texts("train"), work / "tokenizer.json"), flush=True)
    return ds, work / "tokenizer.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", choices=sorted(DATA), default="fashion_mnist")
    ap.add_argument("--objectives", nargs="+", default=["simclr", "byol", "barlow_twins"])
    ap.add_argument("--train", type=int, default=4000, help="training images (pretraining and fine-tuning)")
    ap.add_argument("--test", type=int, default=2000, help="test images scored")
    ap.add_argument("--subset-seed", type=int, default=0)
    ap.add_argument("--split-seed", type=int, default=0, help="stratified 80/20 split seed (cifar10_jpeg)")
    ap.add_argument("--epochs", type=int, default=8, help="pretraining epochs over --train images")
    ap.add_argument("--batch-size", type=int, default=256, help="pretraining batch size")
    ap.add_argument("--finetune-epochs", type=int, default=4)
    ap.add_argument("--finetune-batch-size", type=int, default=128)
    ap.add_argument("--finetune-lr", type=float, default=1e-3)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="fine-tuning seeds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="default: bench/results/finetune_<data>.json")
    ap.add_argument("--render", metavar="JSON", help="print a results file as the Markdown table of RESULTS.md, exit")
    args = ap.parse_args()
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return
    recipes = TEXT_RECIPES if args.data == "sst2" else RECIPES
    unknown = sorted(set(args.objectives) - set(recipes))
    if unknown:
        ap.error(f"unknown objectives {unknown} for {args.data}; valid: {sorted(recipes)}")
    torch.set_num_threads(args.threads)
    out = Path(args.out or REPO / "bench" / "results" / f"finetune_{args.data}.json")
    t_start = time.perf_counter()

    work = Path(tempfile.mkdtemp(prefix=f"bench-finetune-{args.data}-"))
    tok_file = ""
    if args.data == "sst2":
        ds, tok_path = text_subset(work, args.train, args.test, args.subset_seed)
        tok_file = str(tok_path)
        tok = TextTokenizer.load(tok_path)
        mean, std, fviews = (), (), None
        train, test = labelled_rows(ds, tok, TEXT_ENCODER["max_len"])

        def build(name: str, kwargs: dict) -> torch.nn.Module:
            return build_text_encoder(name, tok.vocab_size, tok.pad_id, **kwargs)
    else:
        source, path = DATA[args.data]
        ingest(source, path, work / "full", test_fraction=0.2, split_seed=args.split_seed)
        ds = subset_dataset(ImageDataset(work / "full"), work / "data", args.train, args.test, args.subset_seed)
        channels, size = ds.image_shape[0], ds.image_shape[1]
        mean, std = channel_stats(ds)
        train, test = ds.load("train"), ds.load("test")
        fviews = ImageViews(ImageViewConfig(crop_scale=(0.6, 1.0), jitter_p=0.0, grayscale_p=0.0),
                            torch.tensor(mean), torch.tensor(std), size)

        def build(name: str, kwargs: dict) -> torch.nn.Module:
            return build_encoder(name, channels, size, **kwargs)
    budget = {"finetune_epochs": args.finetune_epochs, "finetune_batch_size": args.finetune_batch_size,
              "finetune_lr": args.finetune_lr,
              "views": None if fviews is None else {"crop_scale": [0.6, 1.0], "hflip_p": 0.5},
              "train_images": len(train[1]), "test_images": len(test[1]),
              "steps": args.finetune_epochs * -(-len(train[1]) // args.finetune_batch_size)}
    meta = {"data": args.data, "counts": {k: ds.count(k) for k in ("train", "test")}, "budget": budget,
            "provenance": provenance(args)}
    rows: dict[str, dict] = {}

    def save() -> None:
        write_json_atomic(out, {**meta, "rows": rows, "summary": summarise(rows, args.objectives, recipes),
                                "total_seconds": round(time.perf_counter() - t_start, 1)})

    def finetune(encoder: torch.nn.Module, name: str, extra: dict) -> None:
        knn = None
        for seed in args.seeds:
            cfg = EvalConfig(finetune_epochs=args.finetune_epochs, finetune_batch_size=args.finetune_batch_size,
                             finetune_lr=args.finetune_lr, seed=seed)
            protocols = ["finetune"] if knn is not None else ["knn", "finetune"]  # k-NN has no seed: once
            t0 = time.perf_counter()
            m, _ = evaluate_encoder(encoder, train, test, num_classes=ds.num_classes, mean=mean, std=std,
                                    protocols=protocols, cfg=cfg, finetune_views=fviews,
                                    progress=lambda s: print(f"  [{name} s{seed}] {s}", flush=True))
            knn = m.get("knn/top1", knn)
            rows[f"{name}-s{seed}"] = {**extra, "finetune_seed": seed,
                                       "eval_seconds": round(time.perf_counter() - t0, 1),
                                       "metrics": {"finetune/top1": m["finetune/top1"], "knn/top1": knn}}
            print(f"{name} seed {seed}: {rows[f'{name}-s{seed}']['metrics']}", flush=True)
            save()

    encoders = sorted({(recipes[n].encoder, json.dumps(recipes[n].encoder_kwargs, sort_keys=True))
                       for n in args.objectives})
    for enc_name, enc_kwargs in encoders:  # random init: the initialisation each pretraining run starts from
        torch.manual_seed(0)
        kwargs = json.loads(enc_kwargs)
        finetune(build(enc_name, kwargs), f"random_init_{enc_name}",
                 {"encoder": enc_name, "encoder_kwargs": kwargs})
    for name in args.objectives:
        recipe = recipes[name]
        session = LocalSession(work / f"ckpt-{name}")
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=recipe.lr, warmup_epochs=1,
                          **({"weight_decay": 0.01} if tok_file else {}))  # text: bench/text_quality.py's
        job = TrainJob(run=name, seed=0, data_dir=str(work / "data"), objective=name,
                       objective_config=objective_config(name, recipe.objective_kwargs), encoder=recipe.encoder,
                       encoder_kwargs=recipe.encoder_kwargs, train=cfg, mean=mean, std=std, tokenizer=tok_file)
        t0 = time.perf_counter()
        run_training(job, session)
        last = session.reports[-1]
        extra = {"encoder": recipe.encoder, "encoder_kwargs": recipe.encoder_kwargs, "pretrain_epochs": args.epochs,
                 "pretrain_seconds": round(time.perf_counter() - t0, 1), "lr": recipe.lr,
                 "recipe": recipe.objective_kwargs, "samples_per_s": round(last["train/samples_per_s"], 1),
                 "collapsed": bool(last.get("monitor/collapsed")), "final_loss": round(last["train/loss"], 4)}
        print(f"{name}: pretrained {extra}", flush=True)
        state = torch.load(session.latest_checkpoint() / "state.pt", weights_only=True)
        enc = build(recipe.encoder, recipe.encoder_kwargs)
        enc.load_state_dict(state["eval_encoder"])
        finetune(enc, name, extra)
    save()
    print(render(json.loads(out.read_text())))


def summarise(rows: dict[str, dict], objectives: list[str], recipes: dict[str, Recipe]) -> dict[str, dict]:
    """Per encoder: finetune/top1 mean and sample std over its seeds; per objective also the paired margin over
    random init of its encoder (mean and std of the per-seed differences) and whether it beat it on every seed."""
    groups: dict[str, dict[int, float]] = {}
    for key, r in rows.items():
        groups.setdefault(key.rsplit("-s", 1)[0], {})[r["finetune_seed"]] = r["metrics"]["finetune/top1"]
    out: dict[str, dict] = {}
    for name, per_seed in groups.items():
        vals = list(per_seed.values())
        entry = {"seeds": sorted(per_seed), "finetune_mean": statistics.mean(vals),
                 "finetune_std": statistics.stdev(vals) if len(vals) > 1 else 0.0}
        if name in objectives:
            ref = groups.get(f"random_init_{recipes[name].encoder}", {})
            diffs = [v - ref[s] for s, v in per_seed.items() if s in ref]
            if diffs:
                entry.update(reference=f"random_init_{recipes[name].encoder}", margin_mean=statistics.mean(diffs),
                             margin_std=statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
                             beats_on_every_seed=all(d > 0 for d in diffs))
        out[name] = entry
    return out


def render(result: dict) -> str:
    """Markdown: per encoder, fine-tuning top-1 mean ± std over seeds, k-NN, and the paired margin."""
    b = result["budget"]
    noun = "sentences" if result["data"] == "sst2" else "images"
    lines = [f"Budget: {b['train_images']} training {noun} (all labels), {b['test_images']} test {noun}, "
             f"{b['finetune_epochs']} fine-tuning epochs at batch {b['finetune_batch_size']} ({b['steps']} steps), "
             f"lr {b['finetune_lr']}, seeds {result['summary'][next(iter(result['summary']))]['seeds']}.", "",
             "| encoder | pretraining | finetune/top1 (mean ± std) | knn/top1 | margin over random init (mean ± std) "
             "| beats random init on every seed |", "|---|---|---|---|---|---|"]
    order = sorted(result["summary"], key=lambda n: (not n.startswith("random_init"), n))  # references first
    for name in order:
        s = result["summary"][name]
        first = result["rows"][f"{name}-s{s['seeds'][0]}"]
        pre = f"{first['pretrain_epochs']} epochs, {first['pretrain_seconds']} s" if "pretrain_epochs" in first else "-"
        margin = f"{s['margin_mean']:+.4f} ± {s['margin_std']:.4f}" if "margin_mean" in s else "-"
        beats = ("yes" if s["beats_on_every_seed"] else "no") if "margin_mean" in s else "-"
        lines.append(f"| {name} | {pre} | {s['finetune_mean']:.4f} ± {s['finetune_std']:.4f} | "
                     f"{first['metrics']['knn/top1']:.4f} | {margin} | {beats} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
