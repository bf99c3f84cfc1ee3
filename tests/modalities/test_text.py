"""The text modality's pieces: tokenizer, row layouts, MLM masking, span corruption, causal attention."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_tasks.core.errors import UserError
from ssl_tasks.modalities.text.batching import pack_rows, pad_rows
from ssl_tasks.modalities.text.corruption import IGNORE, mlm_mask, noise_mask, reconstruct, span_corrupt
from ssl_tasks.modalities.text.encoders import build_text_encoder
from ssl_tasks.modalities.text.shards import TextDataset
from ssl_tasks.modalities.text.tokenizer import BASE_SPECIALS, TextTokenizer, sentinel, train_text_tokenizer

SPECIAL = list(range(21))  # the synthetic vocabulary of these tests: ids 0..20 special, 21..999 ordinary
SENTINELS = list(range(5, 21))


# ----------------------------------------------------------------------------- tokenizer


def test_tokenizer_has_fixed_special_ids_and_round_trips(text_tokenizer: Path) -> None:
    tok = TextTokenizer.load(text_tokenizer)
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.sentinel_ids == list(range(5, 21)) and tok.token(tok.sentinel_ids[3]) == sentinel(3)
    assert tok.vocab_size == 400
    texts = ["a gripping , moving film", "n't it émouvant ? ✓ 123"]  # byte level: nothing is unknown
    ids = tok.encode(texts)
    assert all(tok.unk_id not in s and not set(s) & tok.special_ids for s in ids)
    assert [tok.decode(s).strip() for s in ids] == texts


def test_tokenizer_training_is_deterministic(text_dataset: Path, tmp_path: Path) -> None:
    texts = list(TextDataset(text_dataset).iter_texts("train"))
    digests = []
    for i in range(2):
        train_text_tokenizer(texts, tmp_path / f"t{i}.json", vocab_size=500, num_sentinels=4)
        digests.append(hashlib.sha256((tmp_path / f"t{i}.json").read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_tokenizer_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="vocab_size must be >= 300"):
        train_text_tokenizer(["x"], tmp_path / "t.json", vocab_size=100)
    with pytest.raises(UserError, match="empty corpus"):
        train_text_tokenizer([], tmp_path / "t.json", vocab_size=400)
    with pytest.raises(UserError, match="does not exist"):
        TextTokenizer.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not a valid tokenizer.json"):
        TextTokenizer.load(tmp_path / "bad.json")
    assert BASE_SPECIALS[0] == "[PAD]"


# ----------------------------------------------------------------------------- row layouts


def test_pad_rows_frame_truncate_and_pad() -> None:
    rows = pad_rows([[7, 8], list(range(30, 40))], 6, cls_id=2, sep_id=3, pad_id=0)
    assert rows.tolist() == [[2, 7, 8, 3, 0, 0], [2, 30, 31, 32, 33, 3]]
    assert rows.dtype == np.int64


def test_pack_rows_join_with_sep_and_drop_the_tail() -> None:
    rows = pack_rows([[7, 8], [9], [10, 11, 12]], 3, sep_id=3)  # stream 7 8 3 9 3 10 11 12 3 -> 3 rows of 3
    assert rows.tolist() == [[7, 8, 3], [9, 3, 10], [11, 12, 3]]
    assert pack_rows([[7]], 3, sep_id=3).shape == (0, 3)


# ----------------------------------------------------------------------------- MLM masking


def test_mlm_rates_within_tolerance_and_never_on_specials() -> None:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(21, 1000, (512, 64), generator=g)
    ids[:, 0], ids[:, -1], ids[:, 40:60] = 2, 3, 0  # [CLS] ... [SEP] and a run of [PAD]
    ids[::7, 10] = 4  # a literal [MASK] and sentinels in the text must not be selected either
    ids[::5, 11] = 9
    inputs, labels = mlm_mask(ids, g, special_ids=SPECIAL, vocab_size=1000, mask_id=4)
    sel = labels != IGNORE
    special = torch.isin(ids, torch.tensor(SPECIAL))
    assert not (sel & special).any()  # never a special token
    assert torch.equal(inputs[~sel], ids[~sel]) and torch.equal(labels[sel], ids[sel])
    rate = sel.sum() / (~special).sum()
    assert abs(rate - 0.15) < 0.005
    n = sel.sum()
    masked = (inputs[sel] == 4).sum() / n
    kept = (inputs[sel] == ids[sel]).sum() / n
    rnd = 1 - masked - kept
    assert abs(masked - 0.8) < 0.015 and abs(kept - 0.1) < 0.012 and abs(rnd - 0.1) < 0.012
    assert not torch.isin(inputs[sel & (inputs != 4) & (inputs != ids)], torch.tensor(SPECIAL)).any()


def test_mlm_masks_are_drawn_afresh_each_time() -> None:
    ids = torch.randint(21, 1000, (8, 64))
    g = torch.Generator().manual_seed(0)
    a, _ = mlm_mask(ids, g, special_ids=SPECIAL, vocab_size=1000, mask_id=4)
    b, _ = mlm_mask(ids, g, special_ids=SPECIAL, vocab_size=1000, mask_id=4)
    assert not torch.equal(a, b)
    a2, _ = mlm_mask(ids, torch.Generator().manual_seed(0), special_ids=SPECIAL, vocab_size=1000, mask_id=4)
    assert torch.equal(a, a2)  # but seeded


# ----------------------------------------------------------------------------- span corruption


def test_span_corruption_reconstructs_the_original_exactly() -> None:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(21, 1000, (200, 64), generator=g)
    ids[100:, 50:] = 0  # padded rows: only their tokens are corrupted
    enc, dec, tgt = span_corrupt(ids, g, pad_id=0, eos_id=3, bos_id=2, sentinel_ids=SENTINELS)
    for i in range(len(ids)):
        orig = ids[i][ids[i] != 0].tolist()
        assert reconstruct(enc[i].tolist(), tgt[i].tolist(), SENTINELS, 3) == orig
        t = tgt[i][tgt[i] != 0]
        assert torch.equal(dec[i][: len(t)], torch.cat([torch.tensor([2]), t[:-1]]))  # shifted right behind BOS
    assert not torch.isin(enc[:, 0], torch.tensor(SENTINELS)).any()  # rows start with kept text, as in T5


@pytest.mark.parametrize(("density", "mean_span"), [(0.15, 1.0), (0.5, 1.0), (0.9, 1.0), (0.15, 3.0)])
def test_span_corruption_fits_the_row_width(density: float, mean_span: float) -> None:
    """Spans of one token make a full row's input L + 1 long (and dense noise its target): a row that would not
    fit loses its last token, and what is left still reconstructs exactly."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(100, 1000, (50, 64), generator=g)  # ids 5..99 are sentinels here
    ids[25:, 40:] = 0  # short rows fit as they are
    enc, dec, tgt = span_corrupt(ids, g, pad_id=0, eos_id=3, bos_id=2, sentinel_ids=list(range(5, 100)),
                                 noise_density=density, mean_span_length=mean_span)
    assert enc.shape[1] <= 64 and tgt.shape[1] <= 64 and dec.shape == tgt.shape
    trimmed = 0
    for i in range(len(ids)):
        orig = ids[i][ids[i] != 0].tolist()
        back = reconstruct(enc[i].tolist(), tgt[i].tolist(), list(range(5, 100)), 3)
        assert back == orig or (len(orig) == 64 and back == orig[:-1])
        trimmed += back != orig
    assert trimmed == (25 if (density, mean_span) != (0.15, 3.0) else 0)  # only the full rows, only when needed


def test_noise_mask_density_and_span_length() -> None:
    rng = np.random.default_rng(0)
    masks = [noise_mask(100, 0.15, 3.0, rng) for _ in range(500)]
    density = np.mean([m.mean() for m in masks])
    spans = [int((m & ~np.concatenate([[False], m[:-1]])).sum()) for m in masks]
    assert density == pytest.approx(0.15, abs=1e-9)  # round(100 * 0.15) noise tokens, exactly
    assert np.mean([m.sum() / s for m, s in zip(masks, spans)]) == pytest.approx(3.0, rel=0.05)
    assert not any(m[0] for m in masks)  # a row starts with kept text, as in T5


# ----------------------------------------------------------------------------- encoders


@pytest.mark.parametrize("position", ["learned", "rope", "relative", "relative+window"])
@pytest.mark.parametrize("name", ["causal_transformer", "seq2seq_transformer", "text_transformer"])
def test_causal_model_cannot_see_the_future(name: str, position: str) -> None:
    torch.manual_seed(0)
    kind, _, win = position.partition("+")
    enc = build_text_encoder(name, 1000, 0, max_len=32, width=32, heads=2, depth=2, position=kind,
                             window=3 if win else 0).eval()
    ids = torch.randint(21, 1000, (4, 32))
    later = ids.clone()
    later[:, 20] = (later[:, 20] + 1) % 1000
    h, h2 = enc.forward_tokens(ids), enc.forward_tokens(later)
    if name == "causal_transformer":
        torch.testing.assert_close(h[:, :20], h2[:, :20])
        assert not torch.allclose(h[:, 20:], h2[:, 20:])
    else:  # bidirectional: earlier positions do see a later change
        assert not torch.allclose(h[:, :20], h2[:, :20])
    if win:  # two layers of a 3-token window: position 20 reaches 6 either way, no further
        reach = slice(14, 27) if name != "causal_transformer" else slice(20, 27)
        assert not torch.allclose(h[:, reach], h2[:, reach])
        torch.testing.assert_close(h[:, :14], h2[:, :14])
        torch.testing.assert_close(h[:, 27:], h2[:, 27:])
    if name == "seq2seq_transformer":  # the decoder is causal too
        dec = torch.randint(21, 1000, (4, 12))
        dec2 = dec.clone()
        dec2[:, 8] = (dec2[:, 8] + 1) % 1000
        d, d2 = enc.decode(dec, h, ids), enc.decode(dec2, h, ids)
        torch.testing.assert_close(d[:, :8], d2[:, :8])
        assert not torch.allclose(d[:, 8:], d2[:, 8:])


@pytest.mark.parametrize("name", ["causal_transformer", "text_transformer"])
@pytest.mark.parametrize("position", ["learned", "rope", "relative", "relative+window"])
def test_pooling_ignores_padding(position: str, name: str) -> None:
    torch.manual_seed(0)
    kind, _, win = position.partition("+")
    enc = build_text_encoder(name, 1000, 0, max_len=16, width=32, heads=2, position=kind, window=2 if win else 0).eval()
    ids = torch.randint(21, 1000, (2, 8))
    padded = torch.cat([ids, torch.zeros(2, 8, dtype=torch.long)], dim=1)
    torch.testing.assert_close(enc(ids), enc(padded), atol=1e-5, rtol=1e-5)


def _slow_block(blk: torch.nn.Module, x: torch.Tensor, pad: torch.Tensor, causal: bool,
                bias: torch.Tensor | None = None, rotary: bool = True, window: int = 0) -> torch.Tensor:
    x = _slow_self_attention(blk, x, pad, causal, bias, rotary, window)
    return x + blk.mlp(blk.norm2(x))


def _slow_self_attention(blk: torch.nn.Module, x: torch.Tensor, pad: torch.Tensor, causal: bool,
                         bias: torch.Tensor | None = None, rotary: bool = True, window: int = 0) -> torch.Tensor:
    """RoPE attention written out per position: rotate each (x_{2i}, x_{2i+1}) pair of the RoFormer paper,
    with pairs taken as (i, i + Dh/2) channels, by angle pos * 10000^(-2i/Dh); add bias[h, i, j] to the score of
    query i and key j; softmax over allowed keys."""
    b, n, d = x.shape
    h = blk.heads
    dh = d // h
    q, k, v = blk.qkv(blk.norm1(x)).view(b, n, 3, h, dh).unbind(2)  # (B, L, H, Dh) each

    def rot(t: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(t)
        for pos in range(n):
            for i in range(dh // 2):
                a = pos * 10000.0 ** (-2 * i / dh)
                c, s = math.cos(a), math.sin(a)
                x1, x2 = t[:, pos, :, i], t[:, pos, :, i + dh // 2]
                out[:, pos, :, i], out[:, pos, :, i + dh // 2] = x1 * c - x2 * s, x1 * s + x2 * c
        return out

    if rotary:
        q, k = rot(q), rot(k)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dh)
    if bias is not None:
        scores = scores + bias[None]
    allowed = ~pad[:, None, None, :]
    if causal:
        allowed = allowed & torch.ones(n, n, dtype=torch.bool).tril()
    if window:
        allowed = allowed & torch.tensor([[abs(i - j) <= window for j in range(n)] for i in range(n)])
    o = torch.einsum("bhqk,bkhd->bqhd", scores.masked_fill(~allowed, float("-inf")).softmax(-1), v)
    return x + blk.proj(o.reshape(b, n, d))


@pytest.mark.parametrize("window", [0, 2])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("position", ["rope", "relative"])
def test_position_block_matches_a_slow_reference(causal: bool, position: str, window: int) -> None:
    from ssl_tasks.core.blocks import PositionBlock, RelativePositionBias, attention_context

    torch.manual_seed(0)
    blk = PositionBlock(16, 2, 2.0).double().eval()
    x = torch.randn(3, 7, 16, dtype=torch.float64)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, 3:] = True  # with window 2, query 6 has only padding in reach
    rotary, bias = position == "rope", None
    if position == "relative":
        rel = RelativePositionBias(2, 9).double()
        torch.nn.init.normal_(rel.table)
        bias = rel(7)
        for h, i, j in [(0, 0, 0), (1, 2, 5), (0, 6, 1)]:  # [h, i, j] is the table's entry for offset j - i
            assert bias[h, i, j] == rel.table[h, j - i + 8]
    got = blk(x, attention_context(7, 8, x.device, pad, causal, bias=bias, rotary=rotary, window=window))
    assert not got.isnan().any()  # a padding query also sees itself, so none is an all -inf row
    keep = ~pad  # and padding queries are never pooled
    torch.testing.assert_close(got[keep], _slow_block(blk, x, pad, causal, bias, rotary, window)[keep])
    # no padding: the fused path without a boolean mask gives the same
    ctx = attention_context(7, 8, x.device, None, causal, bias=bias, rotary=rotary, window=window)
    torch.testing.assert_close(blk(x[:1], ctx),
                               _slow_block(blk, x[:1], pad[:1], causal, bias, rotary, window))


@pytest.mark.parametrize("position", ["rope", "relative"])
def test_position_decoder_block_matches_a_slow_reference(position: str) -> None:
    """Causal self-attention with positions, then cross-attention by content to the encoder's non-pad states,
    then the MLP; padded memory positions change nothing."""
    from ssl_tasks.core.blocks import PositionDecoderBlock, RelativePositionBias, attention_context

    torch.manual_seed(0)
    blk = PositionDecoderBlock(16, 2, 2.0).double().eval()
    x, memory = torch.randn(3, 5, 16, dtype=torch.float64), torch.randn(3, 7, 16, dtype=torch.float64)
    pad, mem_pad = torch.zeros(3, 5, dtype=torch.bool), torch.zeros(3, 7, dtype=torch.bool)
    pad[2, 4:], mem_pad[1, 4:] = True, True
    bias = None
    if position == "relative":
        rel = RelativePositionBias(2, 9).double()
        torch.nn.init.normal_(rel.table)
        bias = rel(5)
    got = blk(x, attention_context(5, 8, x.device, pad, True, bias=bias, rotary=position == "rope"), memory, mem_pad)

    ref = _slow_self_attention(blk, x, pad, True, bias, position == "rope")
    q = blk.q_cross(blk.norm_cross(ref)).view(3, 5, 2, 8)
    k, v = blk.kv_cross(memory).view(3, 7, 2, 2, 8).unbind(2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(8)
    att = scores.masked_fill(mem_pad[:, None, None, :], float("-inf")).softmax(-1)
    ref = ref + blk.proj_cross(torch.einsum("bhqk,bkhd->bqhd", att, v).reshape(3, 5, 16))
    ref = ref + blk.mlp(blk.norm2(ref))
    keep = ~pad
    torch.testing.assert_close(got[keep], ref[keep])
    changed = memory.clone()
    changed[1, 4:] = torch.randn(3, 16, dtype=torch.float64)
    ctx = attention_context(5, 8, x.device, pad, True, bias=bias, rotary=position == "rope")
    torch.testing.assert_close(blk(x, ctx, changed, mem_pad), got)
    assert not torch.allclose(blk(x, ctx, changed, None), got)
    with pytest.raises(ValueError, match="memory"):
        blk(x, ctx)


def test_rotary_attention_depends_on_offsets_only() -> None:
    from ssl_tasks.core.blocks import rope_angles, rotate_half_pairs

    torch.manual_seed(0)
    q, k = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    cos, sin = (t.double() for t in rope_angles(40, 8, torch.device("cpu")))

    def score(m: int, n: int) -> float:
        return float(rotate_half_pairs(q, cos[m], sin[m]) @ rotate_half_pairs(k, cos[n], sin[n]))

    assert score(3, 1) == pytest.approx(score(30, 28), abs=1e-5)  # angles are float32
    assert score(5, 5) == pytest.approx(float(q @ k), abs=1e-5)  # offset 0: the plain dot product
    assert score(3, 1) != pytest.approx(score(1, 3), abs=1e-6)  # direction matters, unlike |m - n| biases


@pytest.mark.parametrize("name", ["text_transformer", "seq2seq_transformer"])
def test_embed_norm_brings_tokens_to_the_blocks_scale(name: str) -> None:
    """BERT's embedding LayerNorm: each token's embedding has zero mean and unit variance over the width (the
    table alone has std 0.02, so its tokens are ~50x shorter than normed ones); the decoder's input has its own."""
    torch.manual_seed(0)
    ids = torch.randint(21, 1000, (4, 12))
    plain = build_text_encoder(name, 1000, 0, width=64, heads=4, position="rope").eval()
    normed = build_text_encoder(name, 1000, 0, width=64, heads=4, position="rope", embed_norm=True).eval()
    normed.load_state_dict(plain.state_dict(), strict=False)  # same table; the norms start at gain 1, bias 0
    z = normed.embed(ids)  # (4, 12, 64)
    assert torch.allclose(z.mean(-1), torch.zeros(4, 12), atol=1e-5)
    assert ((z.var(-1, unbiased=False) > 0.95) & (z.var(-1, unbiased=False) < 1.0)).all()  # LayerNorm's eps 1e-5
    raw = plain.embed(ids)
    assert torch.allclose(z, torch.nn.functional.layer_norm(raw, (64,)), atol=1e-5)
    assert raw.norm(dim=-1).mean() < 0.03 * z.norm(dim=-1).mean()  # 0.02 * sqrt(64) vs ~sqrt(64)
    if name == "seq2seq_transformer":
        memory = normed.forward_tokens(ids)
        before = normed.decode(ids[:, :5], memory, ids)
        with torch.no_grad():
            normed.dec_embed_norm.weight.mul_(2.0)
        assert not torch.allclose(before, normed.decode(ids[:, :5], memory, ids))  # the decoder goes through its own


@pytest.mark.parametrize("name", ["text_transformer", "causal_transformer", "seq2seq_transformer"])
def test_first_last_pooling_averages_embeddings_and_final_states(name: str) -> None:
    """pooling: first_last is, per sentence, the mean over its non-pad tokens of (embedding + final state) / 2,
    the embedding taken after embed_norm and without dropout; the default stays the mean of the final states."""
    torch.manual_seed(0)
    ids = torch.randint(21, 1000, (3, 10))
    ids[1, 6:] = 0  # padding: left out of both means
    kw = {"width": 32, "heads": 4, "position": "rope", "window": 2, "embed_norm": True}
    last = build_text_encoder(name, 1000, 0, **kw).eval()
    fl = build_text_encoder(name, 1000, 0, pooling="first_last", **kw).eval()
    fl.load_state_dict(last.state_dict())  # pooling adds no parameters: checkpoints load either way
    with torch.no_grad():
        h = last.forward_tokens(ids)  # (3, 10, 32)
        e = torch.nn.functional.layer_norm(last.tok_embed(ids), (32,))  # the norm starts at gain 1, bias 0
        want = torch.stack([((h[i] + e[i])[ids[i] != 0] / 2).mean(0) for i in range(3)])  # one sentence at a time
        assert torch.allclose(fl(ids), want, atol=1e-5)
        assert torch.allclose(last(ids), torch.stack([h[i][ids[i] != 0].mean(0) for i in range(3)]), atol=1e-5)
        assert not torch.allclose(fl(ids), last(ids), atol=1e-3)
        assert torch.allclose(fl.pool(h, ids), want, atol=1e-5)  # what the objectives' monitors pool
    fl.train()  # dropout on the embeddings never reaches the pooled embedding term
    torch.manual_seed(1)
    h_train = fl.forward_tokens(ids)
    keep = (ids != 0).unsqueeze(-1).float()
    assert torch.allclose(fl.pool(h_train, ids), (((h_train + e) / 2) * keep).sum(1) / keep.sum(1), atol=1e-5)


def test_text_encoder_errors() -> None:
    with pytest.raises(UserError, match="not a text encoder"):
        build_text_encoder("small_cnn", 1000, 0)
    with pytest.raises(UserError, match="multiple of heads"):
        build_text_encoder("text_transformer", 1000, 0, width=30, heads=4)
    with pytest.raises(UserError, match="unknown position 'sinusoid'; valid: learned, rope, relative"):
        build_text_encoder("text_transformer", 1000, 0, position="sinusoid")
    with pytest.raises(UserError, match="window .* needs position 'rope' or 'relative'"):
        build_text_encoder("text_transformer", 1000, 0, window=2)
    with pytest.raises(UserError, match="window must be an int >= 0"):
        build_text_encoder("text_transformer", 1000, 0, position="rope", window=-1)
    with pytest.raises(UserError, match="even head width"):
        build_text_encoder("causal_transformer", 1000, 0, width=12, heads=4, position="rope")
    with pytest.raises(UserError, match="embed_norm must be true or false, got 'yes'"):
        build_text_encoder("seq2seq_transformer", 1000, 0, embed_norm="yes")
    with pytest.raises(UserError, match="unknown pooling 'cls'; valid: last, first_last"):
        build_text_encoder("text_transformer", 1000, 0, pooling="cls")
    enc = build_text_encoder("text_transformer", 1000, 0, max_len=8, width=16, heads=2)
    with pytest.raises(ValueError, match="exceeds the encoder's max_len"):
        enc(torch.ones(1, 9, dtype=torch.long))


def test_text_features_are_batched_by_length_without_changing_them() -> None:
    from ssl_tasks.evaluation.features import extract_features

    torch.manual_seed(0)
    enc = build_text_encoder("text_transformer", 1000, 0, max_len=16, width=32, heads=2)
    rows = pad_rows([list(range(30, 30 + n)) for n in (12, 1, 5, 9, 3)], 16, cls_id=2, sep_id=3, pad_id=0)
    feats = extract_features(enc, rows, (), (), batch_size=2)
    enc.eval()
    with torch.no_grad():
        torch.testing.assert_close(feats, torch.cat([enc(torch.from_numpy(r[None])) for r in rows]), atol=1e-5,
                                   rtol=1e-5)
