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
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from provenance import cpu_model, provenance  # bench/ is on sys.path when run as a script

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
    if args.cpus_per_worker:  # two bench processes side by side: one core each, no oversubscribed torch threads
        raw["train"]["cpus_per_worker"] = args.cpus_per_worker
    if args.image_size:
        raw["datasets"]["clipart"]["options"]["image_size"] = args.image_size
    raw["runs"]["lit"] = {**raw["runs"]["clip"], "objective_kwargs": {
        **raw["runs"]["clip"]["objective_kwargs"], "lock_image": True,
        "init_image": "artifacts/runs/simclr/pretrain/seed-0/encoder.pt"}}
    if args.runs:
        raw["runs"] = {k: v for k, v in raw["runs"].items() if k in args.runs}
    for name in raw["runs"]:
        if args.seeds and name in IMAGE_TEXT:  # the image-only SimCLR run (LiT's starting point) keeps one seed
            raw["runs"][name]["seeds"] = args.seeds
    return parse_params(raw)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/bench-clip")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--image-size", type=int, default=None, help="override the profile's 32")
    ap.add_argument("--cpus-per-worker", type=int, default=0, help="Ray worker CPUs = torch threads (0: all cores)")
    ap.add_argument("--runs", nargs="+", default=None, help="a subset of clip, siglip, simclr, lit")
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="train each image-text run once per seed "
                    "(mean ± 95%% CI)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "clip_openclipart.json"))
    ap.add_argument("--render", metavar="JSON")
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="combine result files of runs split over processes "
                    "(e.g. --runs clip siglip and --runs simclr lit) into --out")
    args = ap.parse_args()
    if args.merge:
        record = merge([json.loads(Path(f).read_text()) for f in args.merge])
        record["meta"]["provenance"] = provenance(args)  # the merge's own command; the parts' are kept above
        Path(args.out).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        print(render(record))
        return
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return
    from ssl_tasks.pipeline.baselines import baselines
    from ssl_tasks.pipeline.compare import compare
    from ssl_tasks.pipeline.evaluate import evaluate
    from ssl_tasks.pipeline.ingest import ingest, validate
    from ssl_tasks.pipeline.layout import Layout
    from ssl_tasks.pipeline.pretrain import pretrain
    from ssl_tasks.pipeline.tokenizer import tokenizer

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    params = params_for(args)
    layout = Layout(work)
    timings: dict[str, float] = {}

    def timed(label: str, fn, *a):  # noqa: ANN001, ANN202
        t0 = time.perf_counter()
        out = fn(*a)
        timings[label] = round(time.perf_counter() - t0, 1)
        return out

    for ds in params.datasets:
        if not (layout.data(ds) / "manifest.json").is_file():
            timed(f"ingest@{ds}", ingest, params, ds, layout)
        timed(f"validate@{ds}", validate, params, ds, layout)
        timed(f"tokenizer@{ds}", tokenizer, params, ds, layout)
        timed(f"baselines@{ds}", baselines, params, ds, layout)
    order = sorted(params.runs, key=lambda r: r != "simclr")  # LiT starts from SimCLR's encoder
    for run in order:
        timed(f"pretrain@{run}", pretrain, params, run, layout)
        timed(f"evaluate@{run}", evaluate, params, run, layout)
    table = compare(params, layout)

    rows = {}
    for path in sorted((work / "metrics" / "eval").glob("*.json")):
        rows.update(json.loads(path.read_text())["rows"])
    throughput = {}
    for run in params.runs:
        hist = json.loads((layout.pretrain_dir(run) / "seed-0" / "history.json").read_text())
        throughput[run] = {"samples_per_s": round(float(np.median([h["train/samples_per_s"] for h in hist])), 1),
                           "epochs": len(hist), "final_loss": round(hist[-1]["train/loss"], 4),
                           "train_seconds": round(sum(h["train/epoch_time_s"] for h in hist), 1)}
    record = {"rows": rows, "throughput": throughput, "timings_s": timings, **diagnostics(params, layout),
              "out_of_domain_zero_shot": out_of_domain(params, layout),
              "meta": {"machine": f"{cpu_model()}, {torch.get_num_threads()} threads",
                       "epochs": params.train.epochs, "counts": _counts(layout),
                       "provenance": provenance(args)}}
    Path(args.out).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(table.to_string())
    print(render(record))


def merge(records: list[dict]) -> dict:
    """One record from several: every row, run and out-of-domain score the first file lacks is taken from the next
    (the baselines are seeded, so each file holds the same baseline rows)."""
    out = json.loads(json.dumps(records[0]))
    for r in records[1:]:
        for key in ("rows", "throughput", "timings_s", "centroid_ceiling", "template_sets"):
            for k, v in r.get(key, {}).items():
                out.setdefault(key, {}).setdefault(k, v)
        for name, scores in r.get("out_of_domain_zero_shot", {}).items():
            for k, v in scores.items():
                out.setdefault("out_of_domain_zero_shot", {}).setdefault(name, {}).setdefault(k, v)
    out["meta"]["merged_from"] = len(records)
    out["meta"]["parts_provenance"] = [r.get("meta", {}).get("provenance") for r in records]  # each part's command
    return out


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
    from ssl_tasks.evaluation import zero_shot as zs
    from ssl_tasks.modalities.image.shards import ImageDataset
    from ssl_tasks.modalities.image_text.shards import PairDataset
    from ssl_tasks.modalities.image_text.towers import embed_images, embed_texts, load_two_tower

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


def diagnostics(params, layout) -> dict:  # noqa: ANN001
    """Per two-tower run and seed, on the test split:

    - ``template_sets``: zero-shot with the profile's templates and with the protocol's default 5-template
      ensemble (for the record: the profile's choice was made on a validation split);
    - ``centroid_ceiling``: a diagnostic that uses labels (not zero-shot): each test image takes the class whose
      mean *training* image embedding is nearest. Zero-shot with perfect class prompts could do about this well
      with the same image tower.
    """
    import torch.nn.functional as F  # noqa: N812

    from ssl_tasks.evaluation import zero_shot as zs
    from ssl_tasks.modalities.image_text.shards import PairDataset
    from ssl_tasks.modalities.image_text.towers import embed_images, embed_texts, load_two_tower

    pairs = PairDataset(layout.data("clipart"))
    (x_tr, y_tr), (x_te, y_te) = pairs.load("train"), pairs.load("test")
    sets = {"profile": list(params.evaluation.zero_shot.templates), "5 templates": list(zs.DEFAULT_TEMPLATES)}
    out: dict = {"template_sets": {}, "centroid_ceiling": {}}

    def scores(zi: torch.Tensor, cls: torch.Tensor) -> dict:
        s = zs.zero_shot_scores(zi, cls, y_te)
        return {"top1": round(s["top1"], 4), "balanced_top1": round(s["balanced_top1"], 4)}

    for run in params.runs:
        for pdir in sorted(layout.pretrain_dir(run).glob("seed-*")):
            meta = json.loads((pdir / "meta.json").read_text())
            if meta["objective"] not in ("clip", "siglip"):
                continue
            obj, tok = load_two_tower(meta, pdir, pairs)
            z_tr, z_te = embed_images(obj, x_tr), embed_images(obj, x_te)
            for name, templates in sets.items():
                prompts = zs.class_prompts(pairs.label_names, templates)
                cls = zs.ensemble(embed_texts(obj, tok, [p for ps in prompts for p in ps]), len(templates))
                out["template_sets"].setdefault(run, {}).setdefault(name, {})[pdir.name] = scores(z_te, cls)
            cent = F.normalize(torch.stack([z_tr[y_tr == k].mean(0) for k in range(pairs.num_classes)]), dim=-1)
            out["centroid_ceiling"].setdefault(run, {})[pdir.name] = scores(z_te, cent)
    return out


def _mean_ci(row: dict, col: str) -> str:
    from ssl_tasks.pipeline.leaderboard import mean_ci95

    vals = [m[col] for m in row.get("seed_metrics", {"-": row["metrics"]}).values() if m.get(col) is not None]
    if not vals:
        return "-"
    mean, ci = mean_ci95(vals)
    return f"{mean:.3f} ± {ci:.3f}" if len(vals) > 1 else f"{mean:.3f}"


def render(r: dict) -> str:
    cols = ["knn/top1", "linear/top1", "semi_1pct/top1", "semi_10pct/top1", "zero_shot/top1",
            "zero_shot/balanced_top1", "retrieval/i2t_r1", "retrieval/i2t_r5", "retrieval/i2t_r10",
            "retrieval/t2i_r1", "retrieval/t2i_r5", "retrieval/t2i_r10"]
    lines = ["| row | " + " | ".join(c.replace("retrieval/", "") for c in cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, row in sorted(r["rows"].items()):
        lines.append(f"| {name} | " + " | ".join(_mean_ci(row, c) for c in cols) + " |")
    lines += ["", "| run | samples/s | epochs | train s | final loss |", "|---|---:|---:|---:|---:|"]
    for run, t in r["throughput"].items():
        lines.append(f"| {run} | {t['samples_per_s']} | {t['epochs']} | {t['train_seconds']} | {t['final_loss']} |")
    if r.get("template_sets"):
        from ssl_tasks.pipeline.leaderboard import mean_ci95

        lines += ["", "| run | templates | zero-shot top-1 | balanced |", "|---|---|---:|---:|"]
        for run, sets in r["template_sets"].items():
            for name, seeds in sets.items():
                cells = [mean_ci95([v[k] for v in seeds.values()]) for k in ("top1", "balanced_top1")]
                lines.append(f"| {run} | {name} | " + " | ".join(f"{m:.3f} ± {ci:.3f}" for m, ci in cells) + " |")
    if r.get("centroid_ceiling"):
        lines += ["", "| run | nearest labelled class mean top-1 (per seed) | balanced |", "|---|---|---|"]
        for run, seeds in r["centroid_ceiling"].items():
            lines.append(f"| {run} | {', '.join(str(v['top1']) for v in seeds.values())} | "
                         f"{', '.join(str(v['balanced_top1']) for v in seeds.values())} |")
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
