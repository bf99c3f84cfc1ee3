"""The image-text objectives' own behaviour: params checks, the caption feed, LiT's locked tower, the
two-tower rebuilt from a checkpoint for zero-shot and retrieval."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from objective_cases import CASES, PAIR

from ssl_tasks.core.config import build
from ssl_tasks.core.errors import UserError
from ssl_tasks.modalities.image_text.feed import PairFeed, caption_rows, drop_words
from ssl_tasks.modalities.image_text.shards import PairDataset
from ssl_tasks.objectives import OBJECTIVES
from ssl_tasks.pipeline.params import load_params, parse_params
from ssl_tasks.training.config import TrainConfig, TrainJob, objective_config
from ssl_tasks.training.feeds import open_feed
from ssl_tasks.training.loop import LocalSession, run_training

REPO = Path(__file__).resolve().parents[2]
RAW = yaml.safe_load((REPO / "configs" / "clip.yaml").read_text())


def with_edit(edit) -> dict:  # noqa: ANN001
    raw = copy.deepcopy(RAW)
    edit(raw)
    return raw


def test_clip_profile_parses() -> None:
    p = load_params(REPO / "configs" / "clip.yaml")
    assert p.dataset("clipart").modality == "image_text"
    assert {r.objective for r in p.runs.values()} == {"clip", "siglip", "simclr"}
    assert "zero_shot" in p.evaluation.protocols and "retrieval" in p.evaluation.protocols


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r["runs"]["clip"].update(encoder="text_transformer"), "encodes text, but its image tower is the encoder"),
    (lambda r: r["runs"]["clip"]["objective_kwargs"].update(text_encoder="small_cnn"), "is not a text encoder"),
    (lambda r: r["runs"]["clip"]["objective_kwargs"].update(embed_dim=0), "embed_dim must be >= 1"),
    (lambda r: r["runs"]["clip"]["objective_kwargs"].update(word_dropout=1.0), "word_dropout must be in [0, 1)"),
    (lambda r: r["runs"]["clip"]["objective_kwargs"].update(init_temperature=0.001), "init_temperature must be"),
    (lambda r: r["runs"]["siglip"]["objective_kwargs"].update(bias=1.0), "unknown key(s) bias"),
    (lambda r: r["evaluation"].update(zero_shot={"templates": ["a photo"]}), "needs a {} for the class name"),
    (lambda r: r["baselines"].update(image_text_objective="clip"), "unknown key(s) image_text_objective"),
    (lambda r: r["baselines"].update(include=["random_init"]), "random_init is no dataset baseline any more"),
])
def test_image_text_mistakes_are_named(edit, message: str) -> None:  # noqa: ANN001
    with pytest.raises(UserError) as e:
        parse_params(with_edit(edit))
    assert message in str(e.value)


def test_image_text_objectives_refuse_image_only_and_text_data() -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["runs"]["simclr"]["objective"] = "clip"
    with pytest.raises(UserError, match="does not support modality 'image'"):
        parse_params(raw)


def _job(name: str, data: Path, tok: Path, **kwargs) -> TrainJob:  # noqa: ANN003
    case = CASES[name]
    return TrainJob(run=name, seed=0, data_dir=str(data), objective=name,
                    objective_config=objective_config(name, {**case.objective_kwargs, **kwargs}), encoder=case.encoder,
                    encoder_kwargs=case.encoder_kwargs, train=TrainConfig(epochs=1, batch_size=32, warmup_epochs=0),
                    mean=PAIR.image.mean, std=PAIR.image.std, tokenizer=str(tok))


def test_feed_draws_one_of_each_images_captions_per_epoch(pair_dataset: Path, pair_tokenizer: Path) -> None:
    feed = open_feed(_job("clip", pair_dataset, pair_tokenizer))
    assert isinstance(feed, PairFeed) and feed.count() == PairDataset(pair_dataset).count("train")
    assert (feed.n_captions == 2).all()  # title and keywords
    seen: dict[bytes, set[bytes]] = {}
    for epoch in range(6):
        for images, captions in feed.epoch(batch_size=32, seed=0, epoch=epoch, rank=0, world_size=1):
            assert images.shape == (32, 3, 16, 16) and captions.dtype == np.int64 and len(captions) == 32
            for im, cap in zip(images, captions):
                seen.setdefault(im.tobytes(), set()).add(cap[cap != 0].tobytes())
    assert np.mean([len(s) == 2 for s in seen.values()]) > 0.8  # both captions get drawn across epochs
    a = list(feed.epoch(batch_size=32, seed=0, epoch=3, rank=0, world_size=1))
    b = list(feed.epoch(batch_size=32, seed=0, epoch=3, rank=0, world_size=1))
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))  # seeded


def _words_of(row: np.ndarray, tok) -> list[str]:  # noqa: ANN001
    return tok.decode([int(t) for t in row if t not in tok.special_ids]).split()


def test_word_dropout_drops_whole_words_and_keeps_one(pair_tokenizer: Path) -> None:
    """Against a slow reference: each word of a caption survives with probability 1 - p, all its tokens
    together and in order; [CLS]/[SEP] stay; a caption never loses every word; an empty caption stays empty."""
    from ssl_tasks.modalities.text.tokenizer import TextTokenizer

    tok = TextTokenizer.load(pair_tokenizer)
    captions = [["flag europe sign", "Cubo verde", ""], ["Bandiera della Sardegna|flag|italy", "a drawing of food."]]
    rows, _, _, words = caption_rows(captions, tok, 16, with_words=True)
    assert np.array_equal(rows, caption_rows(captions, tok, 16)[0])  # the same rows with or without word ids
    assert words.shape == rows.shape and ((words >= 0) == ~np.isin(rows, list(tok.special_ids))).all()
    rng = np.random.default_rng(0)
    kept_share, trials = [], 400
    for _ in range(trials):
        out = drop_words(rows, words, 0.5, rng, tok.pad_id)
        assert out.shape == rows.shape
        for src, w, got in zip(rows, words, out):
            assert got[0] == tok.cls_id
            body = got[1 : int(np.flatnonzero(got == tok.sep_id)[0])]
            n_words = int(w.max()) + 1
            if n_words == 0:
                assert len(body) == 0
                continue
            # the slow reference: the kept tokens are the concatenation of some non-empty subset of whole words
            spans = [src[w == k].tolist() for k in range(n_words)]
            chosen, rest = [], body.tolist()
            for span in spans:
                if rest[: len(span)] == span:
                    chosen.append(span)
                    rest = rest[len(span):]
            assert not rest and chosen, (src, got)
            kept_share.append(len(chosen) / n_words)
            assert (got[1 + len(body) + 1 :] == tok.pad_id).all()
    assert abs(np.mean(kept_share) - 0.55) < 0.06  # ~0.5 kept, plus the one rescued word of fully dropped rows
    assert np.array_equal(drop_words(rows, words, 0.0, rng, tok.pad_id), rows)  # p = 0: nothing changes


def test_feed_applies_word_dropout_only_when_asked(pair_dataset: Path, pair_tokenizer: Path) -> None:
    from ssl_tasks.modalities.text.tokenizer import TextTokenizer

    tok = TextTokenizer.load(pair_tokenizer)
    plain = open_feed(_job("clip", pair_dataset, pair_tokenizer))
    assert plain.words is None and plain.word_dropout == 0.0
    feed = open_feed(_job("clip", pair_dataset, pair_tokenizer, word_dropout=0.5))
    assert feed.word_dropout == 0.5 and feed.words.shape == feed.captions.shape
    originals = {tuple(_words_of(r, tok)) for r in feed.captions}
    shorter = 0
    for _, captions in feed.epoch(batch_size=32, seed=0, epoch=0, rank=0, world_size=1):
        for cap in captions:
            got = _words_of(cap, tok)
            shorter += tuple(got) not in originals
    assert shorter > 50  # most multi-word captions lose words
    a = [c for _, c in feed.epoch(batch_size=32, seed=0, epoch=1, rank=0, world_size=1)]
    b = [c for _, c in feed.epoch(batch_size=32, seed=0, epoch=1, rank=0, world_size=1)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # seeded


def test_image_objectives_train_on_the_images_of_a_pair_dataset(pair_dataset: Path, tmp_path: Path) -> None:
    job = TrainJob(run="simclr", seed=0, data_dir=str(pair_dataset), objective="simclr",
                   objective_config=objective_config("simclr", {}),
                   encoder="small_cnn",
                   encoder_kwargs={"width": 8}, train=TrainConfig(epochs=1, batch_size=32), mean=PAIR.image.mean,
                   std=PAIR.image.std)
    feed = open_feed(job)
    assert feed.modality == "image"
    session = LocalSession(tmp_path / "ckpt")
    run_training(job, session)
    assert np.isfinite(session.reports[-1]["train/loss"])


def test_lit_locks_the_image_tower(pair_dataset: Path, pair_tokenizer: Path, tmp_path: Path) -> None:
    """LiT: a pretrained image tower loads, never changes (weights or batch-norm statistics); the text tower
    and projections learn."""
    from ssl_tasks.modalities.image.encoders import build_encoder

    torch.manual_seed(3)
    pre = build_encoder("small_cnn", 3, 16, width=8)
    torch.save(pre.state_dict(), tmp_path / "encoder.pt")
    job = _job("clip", pair_dataset, pair_tokenizer, lock_image=True, init_image=str(tmp_path / "encoder.pt"))
    session = LocalSession(tmp_path / "ckpt")
    run_training(replace(job, train=replace(job.train, epochs=2)), session)
    state = torch.load(session.latest_checkpoint() / "state.pt", weights_only=True)
    for k, v in pre.state_dict().items():
        assert torch.equal(state["eval_encoder"][k], v), k  # weights and running statistics untouched
    torch.manual_seed(0)
    fresh = OBJECTIVES.get("clip")(build_encoder("small_cnn", 3, 16, width=8),
                                   build(OBJECTIVES.get("clip").Config, CASES["clip"].objective_kwargs, "x"), PAIR)
    moved = [k for k, v in fresh.state_dict().items() if k.startswith("text_") and not torch.equal(state["objective"][k], v)]
    assert moved  # the text tower trained


def test_two_tower_round_trip_scores_the_test_pairs(pair_dataset: Path, pair_tokenizer: Path, tmp_path: Path) -> None:
    """What the evaluate stage does: rebuild the two-tower from objective.pt and score zero-shot and retrieval."""
    from ssl_tasks.modalities.image_text.towers import build_two_tower, tower_metrics
    from ssl_tasks.modalities.text.tokenizer import TextTokenizer
    from ssl_tasks.pipeline.params import ZeroShotParams

    ds = PairDataset(pair_dataset)
    tok = TextTokenizer.load(pair_tokenizer)
    case = CASES["siglip"]
    obj = build_two_tower("siglip", objective_config("siglip", case.objective_kwargs), case.encoder, case.encoder_kwargs, ds, tok,
                          PAIR.image.mean, PAIR.image.std)
    torch.save(obj.state_dict(), tmp_path / "objective.pt")
    again = build_two_tower("siglip", objective_config("siglip", case.objective_kwargs), case.encoder, case.encoder_kwargs, ds, tok,
                            PAIR.image.mean, PAIR.image.std)
    again.load_state_dict(torch.load(tmp_path / "objective.pt", weights_only=True))
    lines: list[str] = []
    m1 = tower_metrics(obj, tok, ds, ["zero_shot", "retrieval"], ZeroShotParams(), lines.append)
    m2 = tower_metrics(again, tok, ds, ["zero_shot", "retrieval"], ZeroShotParams(), lines.append)
    assert m1 == m2 and 0 <= m1["zero_shot/top1"] <= 1 and m1["zero_shot/chance"] == 1 / ds.num_classes
    assert {"retrieval/i2t_r1", "retrieval/t2i_r10", "retrieval/r1"} <= set(m1)
    assert "zero-shot top-1" in lines[0] and "held-out images" in lines[0]
