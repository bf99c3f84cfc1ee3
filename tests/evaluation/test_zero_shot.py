"""Zero-shot scoring, prompt ensembling, retrieval recall@k and the bag-of-words transfer baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssl_tasks.evaluation import zero_shot as zs


def _slow_recall(sim: np.ndarray, owner: np.ndarray, k: int) -> tuple[float, float]:
    """Image->text: any own caption in the top k; text->image: own image in the top k (ties count against)."""
    n, m = sim.shape
    i2t = []
    for i in range(n):
        own = [j for j in range(m) if owner[j] == i]
        best = max(sim[i, j] for j in own)
        i2t.append(sum(1 for j in range(m) if owner[j] != i and sim[i, j] >= best) < k)
    t2i = []
    for j in range(m):
        s = sim[owner[j], j]
        t2i.append(sum(1 for i in range(n) if i != owner[j] and sim[i, j] >= s) < k)
    return float(np.mean(i2t)), float(np.mean(t2i))


def test_retrieval_recall_matches_a_slow_reference_with_several_captions_per_image() -> None:
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(12, 8, generator=g), dim=1)
    owner = np.array([0, 0, 1, 2, 2, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 11])
    txt = F.normalize(img[owner] + 0.9 * torch.randn(len(owner), 8, generator=g), dim=1)
    got = zs.retrieval_recall(img, txt, owner)
    sim = (img @ txt.T).numpy()
    for k in (1, 5, 10):
        i2t, t2i = _slow_recall(sim, owner, k)
        assert got[f"i2t_r{k}"] == pytest.approx(i2t) and got[f"t2i_r{k}"] == pytest.approx(t2i)
    assert got["r1"] == (got["i2t_r1"] + got["t2i_r1"]) / 2
    assert 0 < got["i2t_r1"] < 1  # a non-trivial case


def test_perfect_and_shuffled_embeddings() -> None:
    e = torch.eye(20)
    owner = np.arange(20)
    assert zs.retrieval_recall(e, e, owner)["r1"] == 1.0
    shuffled = zs.retrieval_recall(e, e[torch.roll(torch.arange(20), 1)], owner)
    assert shuffled["i2t_r1"] == 0.0 and shuffled["t2i_r1"] == 0.0
    assert shuffled["t2i_r10"] == 0.0  # one wrong image outranks the caption's own and 18 tie with it: rank 19
    tied = zs.retrieval_recall(torch.ones(4, 2) / 2**0.5, torch.ones(4, 2) / 2**0.5, np.arange(4))
    assert tied["r1"] == 0.0 and tied["i2t_r5"] == 1.0  # all tied: ties are misses, never hits


def test_ties_are_misses() -> None:
    img = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # two identical images, one caption each
    txt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    r = zs.retrieval_recall(img, txt, np.array([0, 1]))
    assert r["t2i_r1"] == 0.0  # caption 0 ties between its image and the other


def test_prompt_ensembling_averages_each_class_templates() -> None:
    prompts = zs.class_prompts(["signs_and_symbols", "food"], ["a drawing of {}.", "{}"])
    assert prompts == [["a drawing of signs and symbols.", "signs and symbols"], ["a drawing of food.", "food"]]
    p = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [-1.0, 0.1]]), dim=1)  # class-major
    c = zs.ensemble(p, 2)
    assert torch.allclose(c[0], F.normalize(torch.tensor([1.0, 1.0]), dim=0))
    assert torch.allclose(c.norm(dim=1), torch.ones(2))


def test_zero_shot_scores_count_top1_balanced_chance_and_majority() -> None:
    classes = torch.eye(3)
    images = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 0, 0]])
    labels = np.array([0, 0, 0, 1, 2, 2])
    s = zs.zero_shot_scores(images, classes, labels)
    assert s["top1"] == pytest.approx(5 / 6)
    assert s["balanced_top1"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert s["chance"] == 1 / 3 and s["majority"] == 0.5


def test_bow_transfer_takes_the_captions_of_the_pixel_nearest_training_images() -> None:
    train_px = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])
    train_bow = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    out = zs.bow_transfer(train_px, train_bow, torch.tensor([[1.0, 0.05]]), k=2)  # nearest: rows 0 and 2
    assert torch.allclose(out[0], F.normalize(torch.tensor([1.0, 0.0, 1.0]), dim=0))
