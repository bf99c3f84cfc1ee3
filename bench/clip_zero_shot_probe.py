"""Where zero-shot goes wrong: per-class accuracy and prompt variants of a trained two-tower run.

Diagnostics, not the reported figure (the variants are chosen after looking at test results). Reads a
``bench/clip_quality.py`` work folder:

    python bench/clip_zero_shot_probe.py --work /tmp/bench-clip --runs clip siglip lit \
        --out bench/results/clip_zero_shot_probe.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from provenance import provenance  # bench/ is on sys.path when run as a script

from ssl_tasks.evaluation import zero_shot as zs
from ssl_tasks.modalities.image_text.shards import PairDataset
from ssl_tasks.modalities.image_text.towers import embed_images, embed_texts, load_two_tower

TEMPLATES = ["a drawing of {}.", "clip art of {}.", "an icon of {}.", "a picture of {}.", "{}"]
PROBE_WORDS = ["flag", "food", "animal", "people", "computer"]


def probe(work: Path, run: str) -> dict:
    ds = PairDataset(work / "data" / "clipart")
    pdir = work / "artifacts" / "runs" / run / "pretrain" / "seed-0"
    obj, tok = load_two_tower(json.loads((pdir / "meta.json").read_text()), pdir, ds)
    images, labels = ds.load("test")
    zi = embed_images(obj, images)
    names = ds.label_names

    def classes(words: list[str], templates: list[str]) -> torch.Tensor:
        prompts = zs.class_prompts(words, templates)
        return zs.ensemble(embed_texts(obj, tok, [p for ps in prompts for p in ps]), len(templates))

    singular = [n.replace("_and_", " ").rstrip("s") for n in names]
    out: dict = {"variants": {
        "profile templates, label names": zs.zero_shot_scores(zi, classes(names, TEMPLATES), labels),
        "bare {}, label names": zs.zero_shot_scores(zi, classes(names, ["{}"]), labels),
        "profile templates, singular names": zs.zero_shot_scores(zi, classes(singular, TEMPLATES), labels)}}
    pred = (zi @ classes(names, TEMPLATES).T).argmax(1).numpy()
    out["per_class"] = {n: {"n": int((labels == k).sum()), "accuracy": round(float((pred[labels == k] == k).mean()), 3),
                            "predicted": int((pred == k).sum())} for k, n in enumerate(names) if (labels == k).any()}
    out["nearest_test_images"] = {w: [names[labels[i]] for i in (zi @ embed_texts(obj, tok, [w]).T)[:, 0].topk(10).indices]
                                  for w in PROBE_WORDS}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/bench-clip")
    ap.add_argument("--runs", nargs="+", default=["clip", "siglip", "lit"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    result = {run: probe(Path(args.work), run) for run in args.runs}
    for run, r in result.items():
        for name, s in r["variants"].items():
            print(f"{run:8s} {name:36s} top-1 {s['top1']:.3f} balanced {s['balanced_top1']:.3f}")
        print(f"{run:8s} 'flag' nearest: {r['nearest_test_images']['flag']}")
    if args.out:
        result["provenance"] = provenance(args)
        Path(args.out).write_text(json.dumps(result, indent=2, default=float) + "\n")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
