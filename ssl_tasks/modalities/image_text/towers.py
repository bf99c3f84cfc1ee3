"""The image–text side of the stages: the two-tower model rebuilt from a checkpoint, zero-shot and
retrieval on the held-out pairs, and the towers' baselines (random init; bag of words).

``modality.ImageTextModality`` calls these. The image tower itself goes through
the image protocols (k-NN, linear, 1%/10%) exactly like any image encoder, on the same images.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssl_tasks.evaluation import zero_shot as zs
from ssl_tasks.evaluation.features import prepare
from ssl_tasks.evaluation.protocols import PROTOCOLS
from ssl_tasks.modalities.image_text.feed import caption_rows
from ssl_tasks.modalities.image_text.shards import PairDataset
from ssl_tasks.modalities.text.feed import DEFAULT_MAX_LEN, text_spec
from ssl_tasks.modalities.text.stages import TOKENIZER_FILE
from ssl_tasks.modalities.text.tokenizer import TextTokenizer
from ssl_tasks.objectives import OBJECTIVES, DataSpec, PairDataSpec
from ssl_tasks.objectives.image_text import ImageTextObjective
from ssl_tasks.training.config import objective_config_from


def wanted(protocols: Sequence[str]) -> list[str]:
    return [p for p in protocols if PROTOCOLS.get(p).kind == "image_text"]


def build_two_tower(objective: str, objective_config: Any, encoder: str, encoder_kwargs: dict[str, Any],
                    ds: PairDataset, tok: TextTokenizer, mean: Sequence[float], std: Sequence[float]) -> ImageTextObjective:
    """A freshly initialised two-tower objective for ``ds`` (the random-init baseline, or to load weights into): the
    run's typed config, without LiT's pretrained start or lock (evaluation loads or keeps fresh weights itself)."""
    from ssl_tasks.modalities.image.encoders import build_encoder

    cls = OBJECTIVES.get(objective)
    cfg = replace(objective_config, init_image="", lock_image=False)
    max_len = int(cfg.text_encoder_kwargs.get("max_len", DEFAULT_MAX_LEN))
    c, h, w = ds.image_shape
    spec = PairDataSpec(image=DataSpec(channels=c, image_size=min(h, w), mean=tuple(mean), std=tuple(std)),
                        text=text_spec(tok, max_len))
    return cls(build_encoder(encoder, c, min(h, w), **encoder_kwargs), cfg, spec)


def load_two_tower(meta: dict[str, Any], pretrain_dir: Path, ds: PairDataset) -> tuple[ImageTextObjective,
                                                                                        TextTokenizer]:
    tok = TextTokenizer.load(pretrain_dir / TOKENIZER_FILE)
    obj = build_two_tower(meta["objective"], objective_config_from(meta), meta["encoder"],
                          meta["encoder_kwargs"], ds, tok, meta["mean"], meta["std"])
    obj.load_state_dict(torch.load(pretrain_dir / "objective.pt", map_location="cpu", weights_only=True))
    return obj, tok


@torch.no_grad()
def embed_images(obj: ImageTextObjective, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """uint8 (N, C, H, W) -> (N, E) unit embeddings, eval mode."""
    spec = obj.data.image
    mean, std = torch.tensor(spec.mean), torch.tensor(spec.std)
    obj.eval()
    out = [obj.embed_images(prepare(torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size])), mean, std))
           for s in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.empty(0, obj.cfg.embed_dim)


@torch.no_grad()
def embed_texts(obj: ImageTextObjective, tok: TextTokenizer, texts: list[str], batch_size: int = 512) -> torch.Tensor:
    """Texts -> (M, E) unit embeddings (padded rows of the tower's length; batches trimmed of padding)."""
    from ssl_tasks.training.feeds import trim_padding

    rows, *_ = caption_rows([[t] for t in texts], tok, obj.data.text.seq_len)
    obj.eval()
    out = [obj.embed_texts(torch.from_numpy(trim_padding(rows[s : s + batch_size], tok.pad_id)))
           for s in range(0, len(rows), batch_size)]
    return torch.cat(out) if out else torch.empty(0, obj.cfg.embed_dim)


def class_names(ds: PairDataset, overrides: dict[str, str]) -> list[str]:
    return [overrides.get(n, n) for n in ds.label_names]


def pair_scores(image_emb: torch.Tensor, caption_emb: torch.Tensor, class_emb: torch.Tensor | None,
                labels: np.ndarray, owner: np.ndarray, protocols: Sequence[str]) -> dict[str, float]:
    """The image_text protocols' metrics from unit embeddings (any source: towers or bag of words)."""
    metrics: dict[str, float] = {}
    if "zero_shot" in protocols and class_emb is not None:
        s = zs.zero_shot_scores(image_emb, class_emb, labels)
        metrics.update({"zero_shot/top1": s["top1"], "zero_shot/balanced_top1": s["balanced_top1"],
                        "zero_shot/chance": s["chance"], "zero_shot/majority": s["majority"]})
    if "retrieval" in protocols:
        metrics.update({f"retrieval/{k}": v for k, v in zs.retrieval_recall(image_emb, caption_emb, owner).items()})
    return metrics


def _test_pairs(ds: PairDataset) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    images, labels = ds.load("test")
    captions = ds.captions("test")
    flat = [t for c in captions for t in c]
    owner = np.repeat(np.arange(len(captions)), [len(c) for c in captions])
    return images, labels, flat, owner


def tower_metrics(obj: ImageTextObjective, tok: TextTokenizer, ds: PairDataset, protocols: Sequence[str],
                  zero_shot: Any, say: Callable[[str], None]) -> dict[str, float]:
    """Zero-shot and retrieval of a two-tower model on the dataset's test pairs."""
    todo = wanted(protocols)
    if not todo:
        return {}
    t0 = time.perf_counter()
    images, labels, flat, owner = _test_pairs(ds)
    zi, zt = embed_images(obj, images), embed_texts(obj, tok, flat)
    class_emb = None
    if "zero_shot" in todo and ds.num_classes:
        prompts = zs.class_prompts(class_names(ds, dict(zero_shot.class_names)), zero_shot.templates)
        class_emb = zs.ensemble(embed_texts(obj, tok, [p for ps in prompts for p in ps]), len(zero_shot.templates))
    m = pair_scores(zi, zt, class_emb, labels, owner, todo)
    say(_line(m, len(images), len(flat), time.perf_counter() - t0))
    return m


def bow_metrics(ds: PairDataset, tok: TextTokenizer, protocols: Sequence[str], zero_shot: Any,
                say: Callable[[str], None], k: int = 5) -> dict[str, float]:
    """The bag-of-words baseline: an image is the mean caption bag of words of its k pixel-nearest training
    images; captions and class prompts are their own bags of words."""
    todo = wanted(protocols)
    if not todo:
        return {}
    from ssl_tasks.evaluation.features import raw_features

    t0 = time.perf_counter()
    tr_images, _ = ds.load("train")
    tr_caps = ds.captions("train")
    v = tok.vocab_size

    def bows(texts: list[str]) -> torch.Tensor:
        rows, *_ = caption_rows([[t] for t in texts], tok, DEFAULT_MAX_LEN)
        return zs.bow_vectors(rows, v)

    tr_bow = torch.stack([bows(c).mean(0) for c in tr_caps])  # (N_tr, V): an image's captions averaged
    images, labels, flat, owner = _test_pairs(ds)
    zi = zs.bow_transfer(raw_features(tr_images), tr_bow, raw_features(images), k=k)
    class_emb = None
    if "zero_shot" in todo and ds.num_classes:
        prompts = zs.class_prompts(class_names(ds, dict(zero_shot.class_names)), zero_shot.templates)
        class_emb = zs.ensemble(bows([p for ps in prompts for p in ps]), len(zero_shot.templates))
    m = pair_scores(zi, bows(flat), class_emb, labels, owner, todo)
    say("bag of words: " + _line(m, len(images), len(flat), time.perf_counter() - t0))
    return m


def _line(m: dict[str, float], n_images: int, n_captions: int, dt: float) -> str:
    parts = []
    if "zero_shot/top1" in m:
        parts.append(f"zero-shot top-1 {m['zero_shot/top1']:.3f} (balanced {m['zero_shot/balanced_top1']:.3f}; "
                     f"chance {m['zero_shot/chance']:.3f}, majority class {m['zero_shot/majority']:.3f})")
    if "retrieval/r1" in m:
        parts.append(f"retrieval R@1/5/10 image->text {m['retrieval/i2t_r1']:.3f}/{m['retrieval/i2t_r5']:.3f}/"
                     f"{m['retrieval/i2t_r10']:.3f}, text->image {m['retrieval/t2i_r1']:.3f}/"
                     f"{m['retrieval/t2i_r5']:.3f}/{m['retrieval/t2i_r10']:.3f}")
    return "; ".join(parts) + f" on {n_images} held-out images, {n_captions} captions ({dt:.0f} s)"


