"""Video SSL on moving sprites (synthetic: Fashion-MNIST sprites moving in 32 x 32 frames): VideoMAE against random
init of the same encoder, the raw pixels, an image MAE applied per frame and averaged, and a supervised ceiling, on
three label sets (direction of motion, sprite class, speed); with the controls that must fall to chance on direction
(frame-shuffled clips, a single frame repeated). Direction is also probed as its two factors: the axis of motion
(4 classes), which the set of positions a sprite visits gives away in any frame order, and the sign along it (2
classes: bins k and k + 4 are opposite), which only the order of the frames tells.

    python bench/video_quality.py --seeds 0 1 2 --epochs 20 --out bench/results/video_quality.json

Data: the ``moving_sprites`` source (``modalities/video/sources.py``; train sprites from the Fashion-MNIST train
images, test sprites from its test images), in memory. Training: the library's objectives and encoders driven by this
script's loop (AdamW, linear warm-up over the first 5% of the steps, cosine to 0, batch ``--batch-size``), the same
loop for every row. Probes, every row: the frozen encoder's pooled clip embedding (eval mode, all tubelets), the
library's linear probe (``evaluation/linear_probe.py``: standardised features, 100 epochs) and weighted k-NN (k=20,
T=0.07), fit on the train clips, scored on the test clips. Nothing is chosen from the test split: every row runs
with fixed settings (the paper's mask ratio 0.9 and, with ``--mask-ratios 0.9 0.75``, its small-data 0.75 beside
it; both reported). The JSON is rewritten after every row, so a cut-off bench keeps what finished.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from provenance import ResultsFile, provenance  # noqa: E402  (bench/ is on sys.path when run as a script)

from ssl_tasks.core.config import build  # noqa: E402
from ssl_tasks.core.encoders import ENCODERS  # noqa: E402
from ssl_tasks.evaluation.knn import knn_top1  # noqa: E402
from ssl_tasks.evaluation.linear_probe import linear_probe_top1  # noqa: E402
from ssl_tasks.modalities.video.sources import moving_sprites  # noqa: E402
from ssl_tasks.modalities.video.spec import VideoDataSpec  # noqa: E402
from ssl_tasks.objectives import OBJECTIVES, DataSpec  # noqa: E402

ENCODER = {"tubelet": 2, "patch_size": 8, "width": 128, "depth": 4, "heads": 4}
IMAGE_ENCODER = {"patch_size": 8, "width": 128, "depth": 4, "heads": 4, "pool": "mean"}


def load(args: argparse.Namespace) -> dict[str, dict[str, np.ndarray]]:
    """Per split: clips uint8 (N, T, C, H, W) and the three label sets."""
    res = moving_sprites(Path(args.data), test_fraction=0.0, split_seed=0, frames=args.frames, size=args.size,
                         train_clips=args.train_clips, test_clips=args.test_clips, seed=0)
    names = [res.main_label, *res.label_sets]
    out = {}
    for split, sp in res.splits.items():
        labels = {res.main_label: np.asarray(sp.labels, dtype=np.int64)}
        for j, name in enumerate(res.label_sets):
            labels[name] = np.asarray(sp.extra[:, j], dtype=np.int64)
        out[split] = {"clips": np.ascontiguousarray(sp.clips), **{n: labels[n] for n in names}}
        # direction = axis of motion (4: bin mod 4) x its sign (2: bin k and bin k + 4 are opposite): frames in
        # another order keep the axis (the sprite's path is the same set of positions) and lose only the sign
        out[split]["axis"] = labels["direction"] % 4
        out[split]["sign"] = labels["direction"] // 4
    out["_classes"] = {res.main_label: len(res.label_names), **{k: len(v) for k, v in res.label_sets.items()},
                       "axis": 4, "sign": 2}
    return out


def stats(clips: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = clips.astype(np.float64) / 255.0
    axes = (0, 1, 3, 4)
    return tuple(float(v) for v in x.mean(axis=axes)), tuple(float(v) for v in x.std(axis=axes))


def normalise(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = torch.tensor(mean).view(-1, 1, 1)
    s = torch.tensor(std).view(-1, 1, 1)
    return (x.float() / 255 - m) / s


def schedule(step: int, total: int, lr: float) -> float:
    warm = max(1, int(0.05 * total))
    if step < warm:
        return lr * (step + 1) / warm
    return 0.5 * lr * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def train(objective: torch.nn.Module, rows: np.ndarray, args: argparse.Namespace, seed: int, label: str) -> dict:
    """``args.epochs`` epochs of full batches over ``rows`` (uint8, first axis = samples)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.05)
    steps_per_epoch = len(rows) // args.batch_size
    total = args.epochs * steps_per_epoch
    rng = np.random.default_rng(seed)
    log, step, t0 = [], 0, time.perf_counter()
    objective.train()
    for epoch in range(args.epochs):
        order = rng.permutation(len(rows))[: steps_per_epoch * args.batch_size].reshape(steps_per_epoch, -1)
        losses = []
        for idx in order:
            for group in opt.param_groups:
                group["lr"] = schedule(step, total, args.lr)
            objective.progress = step / total
            objective.monitoring = False
            views = objective.make_views(torch.from_numpy(rows[np.sort(idx)]), g)
            res = objective(views)
            opt.zero_grad(set_to_none=True)
            res.loss.backward()
            opt.step()
            losses.append(float(res.loss.detach()))
            step += 1
        terms = {k: round(float(v), 5) for k, v in res.terms.items()}
        log.append({"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 5), **terms,
                    "seconds": round(time.perf_counter() - t0, 1)})
        print(f"{label}: epoch {epoch + 1}/{args.epochs} loss {np.mean(losses):.4f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    seconds = time.perf_counter() - t0
    return {"train_seconds": round(seconds, 1), "steps": total, "samples_per_s": round(total * args.batch_size
                                                                                       / seconds, 1), "log": log}


@torch.no_grad()
def embed_clips(encoder: torch.nn.Module, clips: np.ndarray, mean: tuple, std: tuple) -> torch.Tensor:
    encoder.eval()
    out = [encoder(normalise(torch.from_numpy(clips[s : s + 256]), mean, std)) for s in range(0, len(clips), 256)]
    return torch.cat(out).float()


@torch.no_grad()
def embed_frames(encoder: torch.nn.Module, clips: np.ndarray, mean: tuple, std: tuple) -> torch.Tensor:
    """An image encoder per frame, the frame embeddings averaged over the clip."""
    encoder.eval()
    out = []
    for s in range(0, len(clips), 64):
        x = torch.from_numpy(clips[s : s + 64])  # (B, T, C, H, W)
        b, t = x.shape[:2]
        f = encoder(normalise(x.flatten(0, 1), mean, std))  # (B*T, D)
        out.append(f.view(b, t, -1).mean(dim=1))
    return torch.cat(out).float()


def probes(f_tr: torch.Tensor, f_te: torch.Tensor, data: dict, seed: int, sets: list[str] | None = None) -> dict:
    out = {}
    for name, k in data["_classes"].items():
        if sets is not None and name not in sets:
            continue
        ytr, yte = torch.from_numpy(data["train"][name]), torch.from_numpy(data["test"][name])
        out[f"linear/{name}"] = round(linear_probe_top1(f_tr, ytr, f_te, yte, num_classes=k, seed=seed), 4)
        out[f"knn/{name}"] = round(knn_top1(f_tr, ytr, f_te, yte, num_classes=k, k=20, temperature=0.07), 4)
    return out


def shuffled(clips: np.ndarray, seed: int) -> np.ndarray:
    """Each clip's frames in its own random order."""
    rng = np.random.default_rng(seed)
    perm = np.argsort(rng.random((len(clips), clips.shape[1])), axis=1)
    return np.ascontiguousarray(np.take_along_axis(clips, perm[:, :, None, None, None], axis=1))


def first_frame(clips: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(clips[:, :1], clips.shape[1], axis=1))


def video_encoder(spec: VideoDataSpec, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return ENCODERS.get("video_vit")(in_channels=spec.channels, frames=spec.frames, image_size=spec.height, **ENCODER)


def summarise(rows: dict[str, list[dict]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per row and metric: the mean and (population) std over its seeds, and how many there were."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, runs in rows.items():
        keys = [k for k in runs[0] if k not in ("seed", "log") and isinstance(runs[0][k], (int, float))]
        out[name] = {k: {"mean": round(float(np.mean([r[k] for r in runs])), 4),
                         "std": round(float(np.std([r[k] for r in runs])), 4), "seeds": len(runs)} for k in keys}
    return out


def merge(files: list[str], out_path: str) -> None:
    """One results file from several runs of this script (processes run side by side): their rows, each file's
    provenance, and the per-row summary over seeds."""
    merged: dict = {"provenance": provenance(), "synthetic": True, "merged_from": [], "rows": {}}
    for f in files:
        d = json.loads(Path(f).read_text())
        merged["merged_from"].append({"file": f, "provenance": d["provenance"]})
        merged.setdefault("data", d["data"])
        merged.setdefault("encoder", d["encoder"])
        for name, runs in d["rows"].items():
            merged["rows"].setdefault(name, []).extend(runs)
    merged["summary"] = summarise(merged["rows"])
    Path(out_path).write_text(json.dumps(merged, indent=1) + "\n")
    print(f"wrote {out_path}: " + ", ".join(f"{k} ({len(v)})" for k, v in merged["rows"].items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "fashion_mnist"))
    ap.add_argument("--train-clips", type=int, default=6000)
    ap.add_argument("--test-clips", type=int, default=2000)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--mask-ratios", type=float, nargs="+", default=[0.9])
    ap.add_argument("--rows", default="raw_pixels,random_init,videomae,controls,image_mae,supervised")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "video_quality.json"))
    ap.add_argument("--merge", nargs="+", metavar="FILE", help="merge these results files into --out, with the "
                    "per-row summary over seeds, and exit")
    args = ap.parse_args()
    if args.merge:
        merge(args.merge, args.out)
        return
    torch.set_num_threads(args.threads)
    rows = set(args.rows.split(","))
    t0 = time.perf_counter()
    data = load(args)
    tr, te = data["train"]["clips"], data["test"]["clips"]
    mean, std = stats(tr)
    _, t, c, h, w = tr.shape
    spec = VideoDataSpec(frames=t, channels=c, height=h, width=w, mean=mean, std=std)
    prov = provenance(args)
    out: dict = {"provenance": prov, "synthetic": True,
                 "data": {"source": "moving_sprites", "train_clips": len(tr), "test_clips": len(te),
                          "clip_shape": [t, c, h, w], "classes": data["_classes"], "mean": mean, "std": std,
                          "chance": {k: round(1 / v, 4) for k, v in data["_classes"].items()},
                          "ingest_seconds": round(time.perf_counter() - t0, 1)},
                 "encoder": {"video_vit": ENCODER, "vit (per frame)": IMAGE_ENCODER}, "rows": {}}
    record = ResultsFile(args.out, out).record

    if "raw_pixels" in rows:
        flat_tr = torch.from_numpy(tr.reshape(len(tr), -1)).float() / 255
        flat_te = torch.from_numpy(te.reshape(len(te), -1)).float() / 255
        record("raw_pixels", 0, probes(flat_tr, flat_te, data, 0))
        del flat_tr, flat_te
    for seed in args.seeds:
        if "random_init" in rows:
            enc = video_encoder(spec, seed)
            record("random_init", seed, probes(embed_clips(enc, tr, mean, std), embed_clips(enc, te, mean, std),
                                               data, seed))
        if "videomae" in rows:
            for ratio in args.mask_ratios:
                enc = video_encoder(spec, seed)
                cfg = build(OBJECTIVES.get("videomae").Config, {"mask_ratio": ratio}, "videomae")
                obj = OBJECTIVES.get("videomae")(enc, cfg, spec)
                name = f"videomae_{ratio:g}"
                stats_ = train(obj, tr, args, seed, f"{name} seed {seed}")
                f_tr, f_te = embed_clips(enc, tr, mean, std), embed_clips(enc, te, mean, std)
                record(name, seed, {**probes(f_tr, f_te, data, seed), **stats_})
                if "controls" in rows:
                    sh_tr, sh_te = shuffled(tr, seed), shuffled(te, seed + 1)
                    record(f"{name}_frames_shuffled", seed,
                           probes(embed_clips(enc, sh_tr, mean, std), embed_clips(enc, sh_te, mean, std), data, seed))
                    record(f"{name}_first_frame_only", seed,
                           probes(embed_clips(enc, first_frame(tr), mean, std),
                                  embed_clips(enc, first_frame(te), mean, std), data, seed))
        if "image_mae" in rows:  # the image MAE on single frames: 4x the clip steps (about the same seconds)
            frames = tr.reshape(-1, c, h, w)
            torch.manual_seed(seed)
            ienc = ENCODERS.get("vit")(in_channels=c, image_size=h, **IMAGE_ENCODER)
            ispec = DataSpec(channels=c, image_size=h, mean=mean, std=std)
            icfg = build(OBJECTIVES.get("mae").Config, {"views": {"crop_scale": [1.0, 1.0], "hflip_p": 0.0}}, "mae")
            iobj = OBJECTIVES.get("mae")(ienc, icfg, ispec)
            sub = np.random.default_rng(seed).choice(len(frames), size=len(tr) * 4, replace=False)
            stats_ = train(iobj, np.ascontiguousarray(frames[sub]), args, seed, f"image_mae seed {seed}")
            record("image_mae_per_frame", seed, {**probes(embed_frames(ienc, tr, mean, std),
                                                          embed_frames(ienc, te, mean, std), data, seed), **stats_})
    if "supervised" in rows:  # the encoder + a linear head on the direction labels of the train clips
        seed = args.seeds[0]
        enc = video_encoder(spec, seed)
        head = torch.nn.Linear(enc.out_dim, data["_classes"]["direction"])
        model = torch.nn.Sequential(enc, head)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
        y = torch.from_numpy(data["train"]["direction"])
        rng, t1 = np.random.default_rng(seed), time.perf_counter()
        steps = args.epochs * (len(tr) // args.batch_size)
        step = 0
        model.train()
        for epoch in range(args.epochs):
            for idx in rng.permutation(len(tr))[: len(tr) // args.batch_size * args.batch_size].reshape(
                    -1, args.batch_size):
                for group in opt.param_groups:
                    group["lr"] = schedule(step, steps, args.lr)
                loss = torch.nn.functional.cross_entropy(model(normalise(torch.from_numpy(tr[idx]), mean, std)),
                                                         y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
            print(f"supervised: epoch {epoch + 1}/{args.epochs} loss {float(loss):.4f}", flush=True)
        record("supervised_direction", seed, {**probes(embed_clips(enc, tr, mean, std),
                                                       embed_clips(enc, te, mean, std), data, seed),
                                              "train_seconds": round(time.perf_counter() - t1, 1)})


if __name__ == "__main__":
    main()
