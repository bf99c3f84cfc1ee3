"""What each language objective must get right beyond the shared contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from objective_cases import TEXT, TINY_TEXT, case_batch

from ssl_tasks.core.config import build
from ssl_tasks.core.errors import UserError
from ssl_tasks.modalities.text.corruption import IGNORE, reconstruct
from ssl_tasks.modalities.text.encoders import build_text_encoder
from ssl_tasks.objectives import OBJECTIVES
from ssl_tasks.objectives.base import TextDataSpec
from ssl_tasks.objectives.mlm import MLM, MLMConfig


def make(name: str, encoder: str, **kwargs: object):  # noqa: ANN201
    torch.manual_seed(0)
    cls = OBJECTIVES.get(name)
    return cls(build_text_encoder(encoder, TEXT.vocab_size, TEXT.pad_id, **TINY_TEXT), build(cls.Config, kwargs, name),
               TEXT)


def test_mlm_loss_is_cross_entropy_over_selected_positions_only() -> None:
    obj = make("mlm", "text_transformer").eval()
    ids = case_batch("mlm", n=32)
    inputs, labels, second = obj.make_views(ids, torch.Generator().manual_seed(0))
    res = obj([inputs, labels, second])
    sel = labels != IGNORE
    h = obj.encoder.forward_tokens(inputs)
    logits = obj.head(h, obj.encoder)  # (B, L, V) at every position
    torch.testing.assert_close(res.loss, F.cross_entropy(logits[sel], labels[sel]))
    # the label of an unselected position does not matter
    other = labels.clone()
    assert (~sel).any()
    torch.testing.assert_close(obj([inputs, other, second]).loss, res.loss)


@pytest.mark.parametrize("position", ["learned", "rope", "rope+window"])
def test_mlm_learns_to_read_context(position: str) -> None:
    """Counting rows (a, a+1, a+2, ... mod 32 from a random a): a masked token is its left neighbour plus one (and
    its right neighbour minus one), which only attention can see.

    Trained briefly, the model must predict most masked tokens; with no context to use the best possible is
    chance (1 in 32). This catches a model that learns only token frequencies (the unigram plateau). (Doubled
    tokens, ``a a b b``, would not do for RoPE: whether the twin is left or right depends on the absolute
    position, which rotary attention does not see.)
    """
    torch.manual_seed(0)
    vocab, length = 36, 16
    spec = TextDataSpec(vocab_size=vocab, pad_id=0, cls_id=1, sep_id=2, mask_id=3, sentinel_ids=(),
                        special_ids=(0, 1, 2, 3), seq_len=length)
    kind, _, win = position.partition("+")
    obj = MLM(build_text_encoder("text_transformer", vocab, 0, max_len=length, width=32, depth=1, heads=2,
                                 position=kind, window=2 if win else 0), MLMConfig(), spec).train()
    opt = torch.optim.AdamW(obj.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)

    def rows() -> torch.Tensor:
        start = torch.randint(0, vocab - 4, (64, 1), generator=g)
        return 4 + (start + torch.arange(length)) % (vocab - 4)

    for step in range(250):
        for group in opt.param_groups:
            group["lr"] = 3e-3 * min(1.0, (step + 1) / 50)
        loss = obj(obj.make_views(rows(), g)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    obj.eval()
    with torch.no_grad():
        acc = obj(obj.make_views(torch.cat([rows() for _ in range(4)]), g)).report["mlm_acc"]
    assert acc > 0.6, f"masked-token accuracy {acc:.3f}: the model is not using the neighbouring token"


def test_nsp_pairs_come_from_consecutive_text() -> None:
    obj = make("mlm", "text_transformer", nsp=True)
    ids = torch.arange(21, 21 + 16 * 16).view(16, 16)  # every token unique: its origin is readable
    pairs, is_next = obj.make_pairs(ids, torch.Generator().manual_seed(3))
    assert pairs.shape == ids.shape and (pairs[:, 0] == TEXT.cls_id).all() and (pairs[:, 8] == TEXT.sep_id).all()
    assert torch.equal(pairs[:, 1:8], ids[:, 1:8])  # A: the row's first half
    for i in range(16):
        row_of_b = int((pairs[i, 9] - 21) // 16)
        assert (row_of_b == i) == bool(is_next[i])  # B follows A exactly when labelled is-next
    assert 0 < int(is_next.sum()) < 16
    res = obj(obj.make_views(ids, torch.Generator().manual_seed(0)))
    assert set(res.terms) == {"mlm_loss", "nsp_loss"} and 0 <= res.report["nsp_acc"] <= 1
    with pytest.raises(UserError, match="nsp builds sentence pairs"):
        build(OBJECTIVES.get("mlm").Config, {"nsp": True, "layout": "pad"}, "mlm")


def test_causal_lm_loss_is_next_token_cross_entropy() -> None:
    obj = make("causal_lm", "causal_transformer").eval()
    ids = case_batch("causal_lm", n=8)
    res = obj(obj.make_views(ids, torch.Generator()))
    logits = obj.encoder.lm_logits(obj.encoder.forward_tokens(ids))
    total, n = 0.0, 0
    for b in range(len(ids)):
        for t in range(ids.shape[1] - 1):
            if ids[b, t + 1] != TEXT.pad_id:
                total += F.cross_entropy(logits[b, t][None], ids[b, t + 1][None]).item()
                n += 1
    assert res.loss.item() == pytest.approx(total / n, rel=1e-5)
    assert res.report["perplexity"] == pytest.approx(torch.exp(res.loss).item(), rel=1e-5)


def test_span_corruption_trains_on_targets_that_rebuild_the_row() -> None:
    obj = make("span_corruption", "seq2seq_transformer")
    ids = case_batch("span_corruption", n=8)
    enc, dec, tgt, _ = obj.make_views(ids, torch.Generator().manual_seed(0))
    for i in range(len(ids)):
        assert reconstruct(enc[i].tolist(), tgt[i].tolist(), TEXT.sentinel_ids, TEXT.sep_id) == \
            ids[i][ids[i] != 0].tolist()
    res = obj([enc, dec, tgt, enc])
    assert torch.isfinite(res.loss) and 0 <= res.report["span_acc"] <= 1


def test_simcse_views_differ_by_dropout_only() -> None:
    obj = make("simcse", "text_transformer")
    ids = case_batch("simcse", n=8)
    v1, v2 = obj.make_views(ids, torch.Generator())
    assert torch.equal(v1, v2)
    res = obj([v1, v2])
    h1, h2 = res.embeddings
    assert not torch.allclose(h1, h2)  # training mode: two dropout masks
    obj.eval()
    e1, e2 = obj([v1, v2]).embeddings
    torch.testing.assert_close(e1, e2)  # no dropout, no difference
    with pytest.raises(ValueError, match="dropout > 0"):
        OBJECTIVES.get("simcse")(build_text_encoder("text_transformer", TEXT.vocab_size, 0, **TINY_TEXT,
                                                    dropout=0.0), build(OBJECTIVES.get("simcse").Config, {}, "s"),
                                 TEXT)


@pytest.mark.parametrize(("name", "encoder", "needs"), [("mlm", "causal_transformer", "bidirectional"),
                                                        ("causal_lm", "text_transformer", "causal"),
                                                        ("span_corruption", "text_transformer", "seq2seq"),
                                                        ("simcse", "small_cnn", "text")])
def test_objectives_refuse_the_wrong_encoder(name: str, encoder: str, needs: str) -> None:
    from ssl_tasks.core.encoders import ENCODERS
    from ssl_tasks.objectives.base import check_compatible

    with pytest.raises(UserError, match=needs):
        check_compatible(OBJECTIVES.get(name), ENCODERS.get(encoder), "text")


def test_a_run_starts_from_another_runs_encoder(text_dataset: Path, text_tokenizer: Path, tmp_path: Path) -> None:
    """``init_encoder`` (SimCSE from an MLM encoder, as the SimCSE paper starts from BERT): the objective's encoder
    starts from the saved weights, then trains; a file for another architecture, or none, is a clear error."""
    from ssl_tasks.training.config import TrainConfig, TrainJob, objective_config
    from ssl_tasks.training.feeds import open_feed
    from ssl_tasks.training.loop import LocalSession, build_objective, run_training

    def job(init: str, **enc: object) -> TrainJob:
        return TrainJob(run="simcse", seed=0, data_dir=str(text_dataset), objective="simcse",
                        objective_config=objective_config("simcse", {}),
                        encoder="text_transformer", encoder_kwargs={**TINY_TEXT, **enc},
                        train=TrainConfig(epochs=1, batch_size=64), mean=(), std=(), tokenizer=str(text_tokenizer),
                        init_encoder=init)

    feed = open_feed(job(""))
    torch.manual_seed(7)
    pre = feed.build_encoder("text_transformer", TINY_TEXT)
    torch.save(pre.state_dict(), tmp_path / "encoder.pt")
    obj = build_objective(job(str(tmp_path / "encoder.pt")), feed)
    for k, v in pre.state_dict().items():
        assert torch.equal(obj.encoder.state_dict()[k], v), k
    assert not torch.equal(build_objective(job(""), feed).encoder.tok_embed.weight, pre.tok_embed.weight)
    session = LocalSession(tmp_path / "ckpt")
    run_training(job(str(tmp_path / "encoder.pt")), session)
    trained = torch.load(session.latest_checkpoint() / "state.pt", weights_only=True)["eval_encoder"]
    assert not torch.equal(trained["tok_embed.weight"], pre.tok_embed.weight)  # it trained from there
    with pytest.raises(UserError, match=r"runs.simcse.init_encoder: .* does not fit the run's encoder"):
        build_objective(job(str(tmp_path / "encoder.pt"), position="rope"), feed)
    with pytest.raises(UserError, match=r"runs.simcse.init_encoder: .*missing.pt does not exist"):
        build_objective(job(str(tmp_path / "missing.pt")), feed)
