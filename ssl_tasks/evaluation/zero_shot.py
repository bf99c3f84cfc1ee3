"""Image–text evaluation: zero-shot classification from class prompts, and cross-modal retrieval.

- **Zero-shot** (CLIP, Radford et al. 2021, Sec. 3.1.4): every class name is put into several prompt
  templates ("a drawing of {}.", ...); the class embedding is the normalised mean of its prompts'
  normalised text embeddings (prompt ensembling); an image takes the class of highest cosine similarity. The
  labels are used only to score: the model never saw them.
- **Retrieval** recall@k (image->text: an image scores a hit when any of its own captions is among the k
  captions most similar to it; text->image: a caption scores when its image is among the k nearest images;
  ties count as misses).

Both work on unit embeddings from any source, so the bag-of-words baseline (:func:`bow_transfer`) goes
through the same scoring as the trained towers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_TEMPLATES = ("a drawing of {}.", "clip art of {}.", "an icon of {}.", "a picture of {}.", "{}")
RECALL_AT = (1, 5, 10)


def class_prompts(names: Sequence[str], templates: Sequence[str]) -> list[list[str]]:
    """One list of prompts per class; ``signs_and_symbols`` reads as "signs and symbols"."""
    return [[t.format(n.replace("_", " ")) for t in templates] for n in names]


def ensemble(prompt_embeddings: torch.Tensor, n_templates: int) -> torch.Tensor:
    """(K*T, E) unit prompt embeddings, class-major -> (K, E) unit class embeddings (the normalised mean)."""
    k = prompt_embeddings.shape[0] // n_templates
    return F.normalize(prompt_embeddings.reshape(k, n_templates, -1).mean(1), dim=-1)


def zero_shot_scores(image_emb: torch.Tensor, class_emb: torch.Tensor, labels: np.ndarray) -> dict[str, float]:
    """Top-1 and class-balanced (mean per-class recall) accuracy of nearest-class prediction.

    ``image_emb`` (N, E) and ``class_emb`` (K, E) unit rows; ``labels`` (N,) ints in [0, K).
    """
    pred = (image_emb @ class_emb.T).argmax(1).cpu().numpy()
    y = np.asarray(labels)
    present = np.unique(y)
    per_class = [float((pred[y == c] == c).mean()) for c in present]
    return {"top1": float((pred == y).mean()), "balanced_top1": float(np.mean(per_class)),
            "chance": 1.0 / len(class_emb), "majority": float(np.bincount(y).max() / len(y))}


def retrieval_recall(image_emb: torch.Tensor, text_emb: torch.Tensor, owner: np.ndarray,
                     ks: Sequence[int] = RECALL_AT) -> dict[str, float]:
    """Recall@k both ways. ``image_emb`` (N, E), ``text_emb`` (M, E) unit rows; ``owner`` (M,) image of each caption.

    Ties count against the query: a rank is the number of wrong candidates at least as similar as the best right
    one. (Bags of words tie often: captions such as "flag sign" recur; counting ties as hits would inflate them.)
    """
    owner_t = torch.as_tensor(np.asarray(owner), dtype=torch.long)
    n, m = image_emb.shape[0], text_emb.shape[0]
    sim = image_emb @ text_emb.T  # (N, M)
    own_mask = owner_t[None, :] == torch.arange(n)[:, None]  # (N, M): caption j belongs to image i
    # text -> image: wrong images at least as similar as the caption's own image
    own = sim[owner_t, torch.arange(m)]  # (M,)
    t2i_rank = ((sim >= own[None, :]) & ~own_mask).sum(0)  # (M,)
    # image -> text: wrong captions at least as similar as the image's best own caption
    best_own = sim.masked_fill(~own_mask, float("-inf")).max(1).values  # (N,)
    i2t_rank = ((sim >= best_own[:, None]) & ~own_mask).sum(1)  # (N,)
    out: dict[str, float] = {}
    for k in ks:
        out[f"i2t_r{k}"] = float((i2t_rank < k).double().mean())
        out[f"t2i_r{k}"] = float((t2i_rank < k).double().mean())
    out["r1"] = (out["i2t_r1"] + out["t2i_r1"]) / 2 if 1 in ks else float("nan")
    return out


def bow_vectors(token_rows: np.ndarray, vocab_size: int) -> torch.Tensor:
    """(M, L) int64 token rows -> (M, V) unit bag-of-words rows (log(1 + count); [PAD] = id 0 dropped)."""
    from ssl_tasks.evaluation.features import raw_features

    return raw_features(token_rows, vocab_size)


def bow_transfer(train_pixels: torch.Tensor, train_text_bow: torch.Tensor, test_pixels: torch.Tensor,
                 k: int = 5) -> torch.Tensor:
    """The raw baseline's image embedding: the mean caption bag of words of the k training images nearest in
    pixel space (cosine), normalised. (N_tr, P), (N_tr, V), (N_te, P) -> (N_te, V).

    It needs no learning at all, so retrieval and zero-shot above it measure what the towers learned beyond
    "similar-looking pictures have similar titles".
    """
    a, b = F.normalize(test_pixels.float(), dim=1), F.normalize(train_pixels.float(), dim=1)
    nn_idx = (a @ b.T).topk(min(k, len(b)), dim=1).indices  # (N_te, k)
    return F.normalize(train_text_bow[nn_idx].mean(1), dim=-1)
