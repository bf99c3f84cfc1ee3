"""Image-text benchmark: CLIP, SigLIP and LiT on Open Clip Art captions, through the pipeline's own stages.

Runs ``configs/clip.yaml`` stage by stage in one work folder (ingest, validate, tokenizer, baselines, pretrain,
evaluate, compare: the same functions ``dvc repro`` calls), plus a LiT run (image tower locked, initialised
from the SimCLR run's encoder) that needs the SimCLR checkpoint first. Then, for the record, zero-shot on
Fashion-MNIST and CIFAR-10 with the clip-art towers (far out of domain: expected near chance). Usage:

    python bench/clip_quality.py --work /tmp/bench-clip --out bench/results/clip_openclipart.json
    python bench/clip_quality.py --render bench/results/clip_openclipart.json

Everything is CPU; ``--epochs`` overrides the profile's training epochs for every run.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
IMAGE_TEXT = ("clip", "siglip", "lit")


def params_for(args: argparse.Namespace):  # noqa: ANN201
    from ssl_tasks.pipeline.params import parse_params

    raw = yaml.safe_load((REPO / "configs" / "clip.yaml").read_text())
    for d in raw["datasets"].values():
        d["path"] = str((REPO / d["path"]).resolve())
    if args.epochs:
        raw["train"]["epochs"] = args.epochs
    if args.image_size:
        raw["datasets"]["clipart"]["options"]["image_size"] = args.image_size
    raw["runs"]["lit"] = {**raw["runs"]["clip"], "objective_kwargs": {
        **raw["runs"]["clip"]["objective_kwargs"], "lock_image": True,
        "init_image": "artifacts/runs/simclr/pretrain/seed-0/encoder.pt"}}
    if args.runs:
        raw["runs"] = {k: v for k, v in raw["runs"].items() if k in args.runs}
    return parse_params(raw)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/bench-clip")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--image-size", type=int, default=None, help="override the profile's 32")
    ap.add_argument("--runs", nargs="+", default=None, help="a subset of clip, siglip, simclr, lit")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "clip_openclipart.json"))
    ap.add_argument("--render", metavar="JSON")
    args = ap.parse_args()
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return
    from ssl_tasks.pipeline import stages

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    params = params_for(args)
    layout = stages.Layout(work)
    timings: dict[str, float] = {}

    def timed(label: str, fn, *a):  # noqa: ANN001, ANN202
        t0 = time.perf_counter()
        out = fn(*a)
        timings[label] = round(time.perf_counter() - t0, 1)
        return out

    for ds in params.datasets:
        if not (layout.data(ds) / "manifest.json").is_file():
            timed(f"ingest@{ds}", stages.ingest, params, ds, layout)
        timed(f"validate@{ds}", stages.validate, params, ds, layout)
        timed(f"tokenizer@{ds}", stages.tokenizer, params, ds, layout)
        timed(f"baselines@{ds}", stages.baselines, params, ds, layout)
    order = sorted(params.runs, key=lambda r: r != "simclr")  # LiT starts from SimCLR's encoder
    for run in order:
        timed(f"pretrain@{run}", stages.pretrain, params, run, layout)
        timed(f"evaluate@{run}", stages.evaluate, params, run, layout)
    table = stages.compare(params, layout)

    rows = {}
    for path in sorted((work / "metrics" / "eval").glob("*.json")):
        rows.update(json.loads(path.read_text())["rows"])
    throughput = {}
    for run in params.runs:
        hist = json.loads((layout.pretrain_dir(run) / "seed-0" / "history.json").read_text())
        throughput[run] = {"samples_per_s": round(float(np.median([h["train/samples_per_s"] for h in hist])), 1),
                           "epochs": len(hist), "final_loss": round(hist[-1]["train/loss"], 4),
                           "train_seconds": round(sum(h["train/epoch_time_s"] for h in hist), 1)}
    record = {"rows": rows, "throughput": throughput, "timings_s": timings,
              "out_of_domain_zero_shot": out_of_domain(params, layout),
              "meta": {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
                       "epochs": params.train.epochs, "counts": _counts(layout)}}
    Path(args.out).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(table.to_string())
    print(render(record))


def _counts(layout) -> dict:  # noqa: ANN001
    m = json.loads((layout.data("clipart") / "manifest.json").read_text())
    return {"image_shape": m["image_shape"],
            **{k: {"images": v["count"], "captions": v["n_captions"]} for k, v in m["splits"].items()}}


def _adapt(images: np.ndarray, size: int, invert: bool) -> np.ndarray:
    """uint8 (N, C, H, W) -> uint8 (N, 3, size, size): grey repeated to RGB, bilinear resize, optionally inverted."""
    x = torch.from_numpy(images).float()
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    if invert:
        x = 255 - x
    return x.round().clamp(0, 255).to(torch.uint8).numpy()


def out_of_domain(params, layout) -> dict:  # noqa: ANN001
    """Zero-shot of the clip-art towers on Fashion-MNIST (inverted: dark on white, like the drawings) and CIFAR-10."""
    from ssl_tasks.data.ingest import ingest
    from ssl_tasks.data.pair_shards import PairDataset
    from ssl_tasks.data.shards import ImageDataset
    from ssl_tasks.evaluation import zero_shot as zs
    from ssl_tasks.pipeline.pair_stages import embed_images, embed_texts, load_two_tower

    targets = {"fashion_mnist": ("idx", SHARED / "fashion_mnist", True),
               "cifar10": ("image_folder", SHARED / "cifar10_jpeg" / "cifar10_test_jpeg.tar", False)}
    pairs = PairDataset(layout.data("clipart"))
    templates = params.evaluation.zero_shot.templates
    out: dict = {}
    for name, (source, path, invert) in targets.items():
        data = layout.root / "ood" / name
        if not (data / "manifest.json").is_file():
            ingest(source, path, data, test_fraction=0.2, split_seed=0)
        ds = ImageDataset(data)
        images, labels = ds.load("test")
        images = _adapt(images, pairs.image_shape[1], invert)
        out[name] = {"n": int(len(labels)), "classes": ds.label_names, "chance": 1 / ds.num_classes}
        for run in params.runs:
            pdir = layout.pretrain_dir(run) / "seed-0"
            meta = json.loads((pdir / "meta.json").read_text())
            if meta["objective"] not in ("clip", "siglip"):
                continue
            obj, tok = load_two_tower(meta, pdir, pairs)
            prompts = zs.class_prompts(ds.label_names, templates)
            cls = zs.ensemble(embed_texts(obj, tok, [p for ps in prompts for p in ps]), len(templates))
            s = zs.zero_shot_scores(embed_images(obj, images), cls, labels)
            out[name][run] = {"top1": round(s["top1"], 4), "balanced_top1": round(s["balanced_top1"], 4)}
            print(f"out-of-domain zero-shot {name} {run}: {out[name][run]} (chance {1 / ds.num_classes:.2f})")
    return out


def render(r: dict) -> str:
    cols = ["knn/top1", "linear/top1", "semi_1pct/top1", "semi_10pct/top1", "zero_shot/top1",
            "zero_shot/balanced_top1", "retrieval/i2t_r1", "retrieval/i2t_r5", "retrieval/i2t_r10",
            "retrieval/t2i_r1", "retrieval/t2i_r5", "retrieval/t2i_r10"]
    lines = ["| row | " + " | ".join(c.replace("retrieval/", "") for c in cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, row in sorted(r["rows"].items()):
        m = row["metrics"]
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.3f}" if c in m else "-" for c in cols) + " |")
    lines += ["", "| run | samples/s | epochs | train s | final loss |", "|---|---:|---:|---:|---:|"]
    for run, t in r["throughput"].items():
        lines.append(f"| {run} | {t['samples_per_s']} | {t['epochs']} | {t['train_seconds']} | {t['final_loss']} |")
    ood = r.get("out_of_domain_zero_shot", {})
    if ood:
        lines += ["", "| zero-shot, out of domain | n | chance | " + " | ".join(IMAGE_TEXT[:2]) + " | lit |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, o in ood.items():
            vals = [f"{o[k]['top1']:.3f}" if k in o else "-" for k in IMAGE_TEXT]
            lines.append(f"| {name} | {o['n']} | {o['chance']:.3f} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
