"""Speech objectives (wav2vec 2.0, HuBERT) learn the content of a known synthetic task.

Two-tone words: a clip alternates two "content" tones (segments of 3 encoder frames), the word (the class) being
one of four pairs of four tones. Over every clip lies a louder utterance-constant "channel": a tone of random
frequency and amplitude, plus noise; the clip's length varies. A random encoder's features are dominated by the
channel, so a k-NN probe on mean-pooled utterance embeddings is weak at random init. The content is what varies
within an utterance, which is what both objectives must model: wav2vec 2.0 must tell a masked frame's latent from
the other masked frames' of the same clip (a constant channel does not help), HuBERT must predict the masked
frames' targets, here the content tone of each frame (what k-means on MFCC approximates on real speech).
``SSL_TASKS_LEARNING_CONTROL=lr0`` (``learning.common``) trains with lr 0, and then both must fail.
"""

from __future__ import annotations

import math

import pytest
import torch
from learning.common import control_lr

from ssl_tasks.core.config import build
from ssl_tasks.evaluation.knn import knn_top1
from ssl_tasks.modalities.speech.encoders import Wav2Vec2Encoder, frame_counts
from ssl_tasks.modalities.speech.frames import SpeechDataSpec, conv_frames
from ssl_tasks.objectives import OBJECTIVES

SR, T, SEGMENT = 16000, 4000, 960  # 0.25 s rows: 12 frames; a segment is 3 frames (hop 320)
TONES = (300.0, 520.0, 780.0, 1100.0)
WORDS = ((0, 1), (2, 3), (0, 2), (1, 3))  # every tone in two words: no single tone names the word
SPEC = SpeechDataSpec(sample_rate=SR, num_samples=T, num_targets=len(TONES))
EXTRA: dict = {}
ENCODER = {"conv_channels": 32, "dim": 64, "depth": 2, "heads": 4, "pos_groups": 8, "dropout": 0.0}


def two_tone_words(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(wave (n, T), lengths (n,), per-frame content targets (n, F) with -100 beyond a clip, word labels (n,))."""
    g = torch.Generator().manual_seed(seed)
    words = torch.randint(0, len(WORDS), (n,), generator=g)
    t = torch.arange(T) / SR
    seg = torch.arange(T) // SEGMENT  # (T,) segment of each sample
    first = torch.randint(0, 2, (n,), generator=g)  # which of the pair starts
    which = (seg[None] + first[:, None]) % 2  # (n, T)
    pair = torch.tensor(WORDS)[words]  # (n, 2)
    tone = pair.gather(1, which)  # (n, T) content tone id per sample
    freq = torch.tensor(TONES)[tone] * (1 + 0.03 * torch.randn(n, 1, generator=g))  # small per-clip pitch shift
    content = torch.sin(2 * math.pi * torch.cumsum(freq / SR, dim=1))
    channel_f = 1500 + 4000 * torch.rand(n, 1, generator=g)
    channel_a = 1.5 + 2.5 * torch.rand(n, 1, generator=g)
    channel = channel_a * torch.sin(2 * math.pi * channel_f * t + 6.3 * torch.rand(n, 1, generator=g))
    wave = content + channel + 0.3 * torch.rand(n, 1, generator=g) * torch.randn(n, T, generator=g)
    lengths = torch.randint(T // 2, T + 1, (n,), generator=g)
    wave = wave.masked_fill(torch.arange(T)[None] >= lengths[:, None], 0.0)
    wave = wave / wave.abs().amax(1, keepdim=True)
    f = conv_frames(T)
    centre = (torch.arange(f) * 320 + 200).clamp_max(T - 1)  # each frame's middle sample
    targets = tone[:, centre].masked_fill(torch.arange(f)[None] >= frame_counts(lengths)[:, None], -100)
    return wave, lengths, targets, words


def make(name: str, seed: int = 0):  # noqa: ANN201
    torch.manual_seed(seed)
    cls = OBJECTIVES.get(name)
    kwargs = {"num_clusters": len(TONES)} if name == "hubert" else {"codebook_entries": 16, "num_negatives": 20}
    kwargs.update(EXTRA)
    return cls(Wav2Vec2Encoder(**ENCODER), build(cls.Config, kwargs, name), SPEC)


def knn(encoder: torch.nn.Module) -> float:
    """k-NN (k=20, cosine) word accuracy on 512 held-out clips from frozen mean-pooled embeddings of 1024."""
    (wa, la, _, ya), (wb, lb, _, yb) = two_tone_words(1024, 100)[:4], two_tone_words(512, 200)[:4]
    encoder.eval()
    with torch.no_grad():
        return knn_top1(encoder(wa, la), ya, encoder(wb, lb), yb, num_classes=len(WORDS))


def learned_and_random(name: str, steps: int, lr: float = 2e-3, seed: int = 0) -> tuple[float, float]:
    random_acc = knn(make(name, seed).eval_encoder)
    obj = make(name, seed)
    wave, lengths, targets, _ = two_tone_words(4096, seed)
    opt = torch.optim.AdamW(obj.parameters(), lr=control_lr(lr), weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        obj.train()
        obj.progress = step / steps
        for grp in opt.param_groups:
            grp["lr"] = control_lr(lr) * min(1.0, (step + 1) / 20)
        idx = torch.randint(0, len(wave), (32,), generator=g)
        batch = (wave[idx], lengths[idx], targets[idx]) if name == "hubert" else (wave[idx], lengths[idx])
        loss = obj(obj.make_views(batch, g)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return knn(obj.eval_encoder), random_acc


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wav2vec2", "hubert"])
def test_speech_objective_beats_its_random_init(name: str) -> None:
    learned, random = learned_and_random(name, steps=200)
    assert learned > 0.8 and learned > random + 0.15, f"{name}: k-NN {learned:.3f} vs random init {random:.3f}"
