"""Image-text training throughput (samples/s): our loop vs a plain PyTorch loop vs open_clip's losses.

CLIP and SigLIP on Open Clip Art pairs at 32x32 (the ``configs/clip.yaml`` towers: small CNN width 32, text
transformer width 128 x 2 layers, captions up to 32 tokens), batch 64. Contenders run interleaved in one process
(A, B, C, A, B, C, ...) after an untimed warm-up round each; medians and ratios are reported.

* ``ours``: the pipeline's ``run_training`` (PairFeed batches, views on device, step, monitors), second epoch.
* ``plain``: the same objective object and AdamW in a bare loop over in-memory tensors (one caption per image).
* ``open_clip``: the same towers and batches in a bare loop, but the loss is open_clip's ``ClipLoss`` /
  ``SigLipLoss`` (open_clip_torch 3.3.0): the peer library's implementation of the same objective.

Also checks, on random embeddings, that our loss values equal open_clip's. Needs the ingested dataset and its
tokenizer, e.g. from ``bench/clip_quality.py --work /tmp/bench-clip``:

    python bench/clip_throughput.py --work /tmp/bench-clip --out bench/results/clip_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml
from provenance import provenance  # bench/ is on sys.path when run as a script
from throughput import _machine, interleave, ours_round  # bench/ is on sys.path when run as a script

from ssl_tasks.modalities.image.feed import channel_stats
from ssl_tasks.training.config import TrainConfig, TrainJob, objective_config
from ssl_tasks.training.feeds import open_feed
from ssl_tasks.training.loop import build_objective, make_optimizer

REPO = Path(__file__).resolve().parents[1]


def loss_agreement() -> dict[str, float]:
    """|ours - open_clip| on random unit embeddings (B=64, D=128), float64."""
    import torch.nn.functional as F
    from open_clip.loss import ClipLoss, SigLipLoss

    from ssl_tasks.losses.clip import CLIPLoss
    from ssl_tasks.losses.siglip import SigLIPLoss

    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(64, 128, generator=g, dtype=torch.float64), dim=1)
    txt = F.normalize(img + torch.randn(64, 128, generator=g, dtype=torch.float64), dim=1)
    scale, t, b = torch.tensor(14.3, dtype=torch.float64), torch.tensor(10.0, dtype=torch.float64), torch.tensor(
        -10.0, dtype=torch.float64)
    ours_clip, peer_clip = CLIPLoss()(img, txt, scale), ClipLoss()(img, txt, scale)
    ours_sig, peer_sig = SigLIPLoss()(img, txt, t, b), SigLipLoss()(img, txt, t, b)
    return {"clip_ours": float(ours_clip), "clip_open_clip": float(peer_clip),
            "clip_abs_diff": float((ours_clip - peer_clip).abs()), "siglip_ours": float(ours_sig),
            "siglip_open_clip": float(peer_sig), "siglip_abs_diff": float((ours_sig - peer_sig).abs())}


def bare_round(job: TrainJob, peer: bool) -> Any:
    """The objective's towers in a bare loop; ``peer``: the loss is open_clip's instead of the objective's."""
    from open_clip.loss import ClipLoss, SigLipLoss

    torch.manual_seed(job.seed)
    feed = open_feed(job)
    objective = build_objective(job, feed)
    objective.train()
    opt = make_optimizer(objective, job.train)
    g = torch.Generator().manual_seed(0)
    batch = job.train.batch_size
    images = torch.from_numpy(feed.images)
    captions = torch.from_numpy(feed.captions[feed.first])  # each image's first caption, padded
    peer_loss = ClipLoss() if job.objective == "clip" else SigLipLoss()

    def loss_of(views: list[torch.Tensor]) -> torch.Tensor:
        if not peer:
            return objective(views).loss
        zi, zt = objective.embed_images(views[0]), objective.embed_texts(views[1])
        if job.objective == "clip":
            return peer_loss(zi, zt, objective.log_scale.exp().clamp(max=100))
        return peer_loss(zi, zt, objective.log_temperature.exp(), objective.bias)

    def run(steps: int) -> dict[str, float]:
        perm = torch.randperm(len(images), generator=g)
        t0 = time.perf_counter()
        for i in range(steps):
            idx = perm[(i * batch) % (len(images) - batch) :][:batch]
            loss = loss_of(objective.make_views((images[idx], captions[idx]), g))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return {"samples_per_s": steps * batch / (time.perf_counter() - t0)}

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/bench-clip", help="a bench/clip_quality.py work folder")
    ap.add_argument("--steps", type=int, default=17, help="timed steps per round (17 = one epoch of 1,136 pairs)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "clip_throughput.json"))
    args = ap.parse_args()
    work = Path(args.work)
    data, tok = work / "data" / "clipart", work / "artifacts" / "tokenizers" / "clipart" / "tokenizer.json"
    if not tok.is_file():
        raise SystemExit(f"{tok} missing: run bench/clip_quality.py --work {work} first")
    from ssl_tasks.modalities.image_text.shards import PairDataset

    raw = yaml.safe_load((REPO / "configs" / "clip.yaml").read_text())
    mean, std = channel_stats(PairDataset(data))
    result: dict[str, Any] = {"machine": _machine(), "args": vars(args), "provenance": provenance(args),
                              "loss_agreement": loss_agreement()}
    print(result["loss_agreement"], flush=True)
    for objective in ("clip", "siglip"):
        run = raw["runs"][objective]
        job = TrainJob(run=objective, seed=0, data_dir=str(data), objective=objective,
                       objective_config=objective_config(objective, run["objective_kwargs"]), encoder=run["encoder"],
                       encoder_kwargs=run["encoder_kwargs"], train=TrainConfig(epochs=1, batch_size=64, lr=1e-3),
                       mean=mean, std=std, tokenizer=str(tok))
        rows = interleave({"ours": ours_round(replace(job), work), "plain": bare_round(job, peer=False),
                           "open_clip": bare_round(job, peer=True)}, args.steps, args.rounds)
        ratios = {}
        for other in ("plain", "open_clip"):
            a, b = rows["ours"]["samples_per_s"], rows[other]["samples_per_s"]
            ratios[f"ours/{other}"] = {
                "of_medians": round(rows["ours"]["median_samples_per_s"] / rows[other]["median_samples_per_s"], 3),
                "median_paired": round(statistics.median(x / y for x, y in zip(a, b)), 3)}
        result[objective] = {"contenders": rows, "ratios": ratios}
        print(objective, json.dumps(ratios), flush=True)
    result["machine"]["loadavg_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
