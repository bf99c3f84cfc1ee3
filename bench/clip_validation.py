"""Choosing the image-text recipe on a validation split of the *training* drawings (the test split is never read).

Carves a stratified 20% validation split out of an ingested Open Clip Art pair dataset's training split, trains
CLIP variants on the remaining 80% for several seeds with the pipeline's own loop, and scores zero-shot (three
template sets) and retrieval on the validation drawings. ``configs/clip.yaml`` takes its ``word_dropout``
and zero-shot templates from this run. Usage (after ``bench/clip_quality.py`` has ingested the data once):

    python bench/clip_validation.py --data /tmp/bench-clip/data/clipart \
        --tokenizer /tmp/bench-clip/artifacts/tokenizers/clipart/tokenizer.json --seeds 1 2 3 \
        --out bench/results/clip_validation.json
    python bench/clip_validation.py --render bench/results/clip_validation.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from provenance import cpu_model, provenance  # bench/ is on sys.path when run as a script

from ssl_tasks.evaluation import zero_shot as zs
from ssl_tasks.modalities.image.feed import channel_stats
from ssl_tasks.modalities.image_text.shards import PairDataset, PairSplit, write_pair_dataset
from ssl_tasks.modalities.image_text.towers import build_two_tower, embed_images, embed_texts
from ssl_tasks.modalities.text.tokenizer import TextTokenizer
from ssl_tasks.pipeline.leaderboard import mean_ci95
from ssl_tasks.training.config import TrainConfig, TrainJob, objective_config
from ssl_tasks.training.loop import CHECKPOINT_FILE, LocalSession, run_training

TOWERS = {"text_encoder_kwargs": {"max_len": 32, "width": 128, "depth": 2, "heads": 4}, "embed_dim": 128}
VARIANTS = {
    "captions as stored": {},
    "word_dropout 0.5": {"word_dropout": 0.5},
}
TEMPLATES = {"5 templates": list(zs.DEFAULT_TEMPLATES), "bare {}": ["{}"],
             "5 caption-like": ["{}", "{} icon", "{} clip art", "{} drawing", "{} picture"]}


def carve(src: Path, out: Path, fraction: float = 0.2, seed: int = 123) -> None:
    """``out``: train = 80% of ``src``'s training drawings, test = the other 20% (stratified by label)."""
    if (out / "manifest.json").is_file():
        return
    ds = PairDataset(src)
    images, labels = ds.load("train")
    records = list(ds.records("train"))
    rng = np.random.default_rng(seed)
    val: list[int] = []
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        rng.shuffle(members)
        val += members[: round(fraction * len(members))].tolist()
    val_idx = np.sort(np.array(val))
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)

    def split(ix: np.ndarray) -> PairSplit:
        return PairSplit(images[ix], [records[i] for i in ix], labels[ix])

    write_pair_dataset(out, {"train": split(train_idx), "test": split(val_idx)}, image_shape=ds.image_shape,
                       label_names=ds.label_names, source={"name": "validation split of " + str(src)})


def score(data: Path, tokenizer: str, kwargs: dict, seed: int, epochs: int, ckpt: Path, reuse: bool) -> dict:
    ds = PairDataset(data)
    mean, std = channel_stats(ds)
    job = TrainJob(run="clip", seed=seed, data_dir=str(data), objective="clip",
                   objective_config=objective_config("clip", kwargs),
                   encoder="small_cnn", encoder_kwargs={"width": 32},
                   train=TrainConfig(epochs=epochs, batch_size=64, lr=1e-3, weight_decay=0.1, warmup_epochs=2),
                   mean=tuple(mean), std=tuple(std), tokenizer=tokenizer)
    t0 = time.perf_counter()
    if not (reuse and (ckpt / CHECKPOINT_FILE).is_file()):
        shutil.rmtree(ckpt, ignore_errors=True)
        run_training(job, LocalSession(ckpt))
    seconds = time.perf_counter() - t0
    tok = TextTokenizer.load(tokenizer)
    obj = build_two_tower("clip", kwargs, "small_cnn", {"width": 32}, ds, tok, mean, std)
    obj.load_state_dict(torch.load(ckpt / CHECKPOINT_FILE, map_location="cpu", weights_only=True)["objective"])
    images, labels = ds.load("test")
    zi = embed_images(obj, images)
    out: dict = {"train_s": round(seconds, 1)}
    for name, templates in TEMPLATES.items():
        prompts = zs.class_prompts(ds.label_names, templates)
        cls = zs.ensemble(embed_texts(obj, tok, [p for ps in prompts for p in ps]), len(templates))
        s = zs.zero_shot_scores(zi, cls, labels)
        out[f"zero_shot {name}"] = {"top1": s["top1"], "balanced_top1": s["balanced_top1"]}
    captions = ds.captions("test")
    owner = np.repeat(np.arange(len(captions)), [len(c) for c in captions])
    out["retrieval"] = zs.retrieval_recall(zi, embed_texts(obj, tok, [t for c in captions for t in c]), owner)
    return out


def render(r: dict) -> str:
    cols = [(f"zero_shot {t}", k) for t in TEMPLATES for k in ("top1", "balanced_top1")] + [("retrieval", "r1")]
    head = ["variant"] + [h for t in TEMPLATES for h in (f"zero-shot top-1 ({t})", "balanced")] + ["retrieval R@1"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for variant, seeds in r["variants"].items():
        cells = []
        for group, key in cols:
            m, ci = mean_ci95([s[group][key] for s in seeds.values()])
            cells.append(f"{m:.3f} ± {ci:.3f}")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/tmp/bench-clip/data/clipart", help="an ingested clip-art pair dataset")
    ap.add_argument("--tokenizer", default="/tmp/bench-clip/artifacts/tokenizers/clipart/tokenizer.json")
    ap.add_argument("--work", default="/tmp/clip-validation")
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--reuse", action="store_true", help="score existing checkpoints in --work, do not retrain")
    ap.add_argument("--out", default=None)
    ap.add_argument("--render", metavar="JSON")
    args = ap.parse_args()
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return
    work = Path(args.work)
    carve(Path(args.data), work / "data")
    counts = {s: PairDataset(work / "data").count(s) for s in ("train", "test")}
    record = {"meta": {"machine": f"{cpu_model()}, {torch.get_num_threads()} threads",
                       "epochs": args.epochs, "counts": counts, "seeds": args.seeds,
                       "provenance": provenance(args)}, "variants": {}}
    for variant in args.variants:
        for seed in args.seeds:
            ckpt = work / f"ckpt-{variant.replace(' ', '_')}-{seed}"
            res = score(work / "data", args.tokenizer, {**TOWERS, **VARIANTS[variant]}, seed, args.epochs, ckpt,
                        args.reuse)
            record["variants"].setdefault(variant, {})[str(seed)] = res
            print(variant, seed, json.dumps({k: v for k, v in res.items() if k != "retrieval"}), flush=True)
            if args.out:
                Path(args.out).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(render(record))


if __name__ == "__main__":
    main()
