"""wav2vec 2.0 and HuBERT beyond the shared contract: their reports, schedules, targets, collapse signal, seeded
in-memory runs, and two-worker DDP on synthetic waveforms (the contract's dataset-backed checks need the speech
feed; see test_contract.py)."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp
from objective_cases import CASES, build_case_encoder, case_batch, spec_for

from ssl_tasks.core.config import build
from ssl_tasks.core.errors import UserError
from ssl_tasks.modalities.speech.frames import SpeechDataSpec
from ssl_tasks.objectives import OBJECTIVES
from ssl_tasks.objectives.wav2vec2 import gumbel_temperature
from ssl_tasks.training.config import objective_config

SPEECH = ["wav2vec2", "hubert"]


def make(name: str, seed: int = 0, **kwargs: object):  # noqa: ANN201
    torch.manual_seed(seed)
    cls = OBJECTIVES.get(name)
    return cls(build_case_encoder(name), build(cls.Config, {**CASES[name].objective_kwargs, **kwargs}, name),
               spec_for(name))


def test_reports_and_terms() -> None:
    g = torch.Generator().manual_seed(0)
    w2v = make("wav2vec2")
    res = w2v(w2v.make_views(case_batch("wav2vec2"), g))
    assert set(res.terms) == {"contrastive_loss", "diversity_loss", "feature_penalty_loss"}
    assert {"codebook_perplexity", "contrastive_accuracy", "gumbel_temperature", "prob_perplexity"} <= set(res.report)
    assert 2 <= res.report["codebook_perplexity"] <= 2 * 8 and res.report["gumbel_temperature"] == 2.0
    assert 0.3 < res.report["masked_fraction"] < 0.7
    hub = make("hubert")
    res = hub(hub.make_views(case_batch("hubert"), g))
    assert set(res.terms) == {"masked_prediction_loss", "feature_penalty_loss"}
    assert 0 <= res.report["masked_accuracy"] <= 1


def test_gumbel_temperature_anneals_over_the_runs_own_length() -> None:
    obj = make("wav2vec2")
    temps = []
    for progress in (0.0, 0.35, 0.7, 1.0):
        obj.progress = progress  # what the loop sets: step / total steps of this run
        temps.append(obj.gumbel_temperature())
    assert temps == pytest.approx([2.0, 1.0, 0.5, 0.5])
    assert gumbel_temperature(0.5, 2.0, 0.5, 1.0) == pytest.approx(1.0)


def test_collapse_signal_is_the_codebook_perplexity() -> None:
    obj = make("wav2vec2")
    assert obj.collapse_reason({"train/codebook_perplexity": 40.0}) is None
    assert obj.collapse_reason({}) is None
    reason = obj.collapse_reason({"train/codebook_perplexity": 2.1})
    assert reason is not None and "codebook perplexity 2.10" in reason
    assert make("hubert").collapse_reason({"train/codebook_perplexity": 1.0}) is None


def test_hubert_checks_its_targets() -> None:
    cls = OBJECTIVES.get("hubert")
    with pytest.raises(UserError, match="num_clusters is 100 but the dataset's targets have 12"):
        cls(build_case_encoder("hubert"), objective_config("hubert", {}), spec_for("hubert"))
    obj = make("hubert")
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="needs \\(wave, lengths, targets\\)"):
        obj.make_views(case_batch("wav2vec2"), g)
    # only masked frames' targets matter: changing the others leaves the loss as it was
    obj.eval()
    views = obj.make_views(case_batch("hubert"), g)
    wave, lengths, mask, targets = views
    other = targets.masked_fill(~mask & (targets >= 0), 0)
    with torch.no_grad():
        a, b = obj(views).loss, obj([wave, lengths, mask, other]).loss
    assert torch.equal(a, b)


def test_pad_is_audio_masks_the_padding_too() -> None:
    wave, lengths = case_batch("wav2vec2")
    g = torch.Generator().manual_seed(0)
    views = make("wav2vec2", pad_is_audio=True).make_views((wave, lengths), torch.Generator().manual_seed(0))
    assert (views[1] == wave.shape[1]).all()
    frames = make("wav2vec2").encoder.frame_lengths(lengths)
    beyond = torch.arange(views[2].shape[1])[None] >= frames[:, None]
    assert views[2][beyond].any()
    plain = make("wav2vec2").make_views((wave, lengths), g)
    assert not plain[2][beyond].any()


def test_bad_settings_are_refused() -> None:
    for name in SPEECH:
        with pytest.raises(UserError, match="mask_prob"):
            objective_config(name, {"mask_prob": 0.0})
        with pytest.raises(UserError, match="mask_length"):
            objective_config(name, {"mask_length": 0})
    with pytest.raises(UserError, match="gumbel_end"):
        objective_config("wav2vec2", {"gumbel_start": 0.5, "gumbel_end": 2.0})
    with pytest.raises(UserError, match="fewer than 2 encoder frames"):
        OBJECTIVES.get("wav2vec2").check_data(SpeechDataSpec(sample_rate=16000, num_samples=500))


def _train(name: str, seed: int, steps: int = 3) -> dict[str, torch.Tensor]:
    obj = make(name, seed)
    opt = torch.optim.AdamW(obj.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for i in range(steps):
        obj.progress = i / steps
        res = obj(obj.make_views(case_batch(name, seed=i), g))
        opt.zero_grad()
        res.loss.backward()
        opt.step()
    return {k: v.clone() for k, v in obj.state_dict().items()}


@pytest.mark.parametrize("name", SPEECH)
def test_seeded_runs_repeat(name: str) -> None:
    a, b, c = _train(name, 7), _train(name, 7), _train(name, 8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].dtype.is_floating_point)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: dict) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    for name in SPEECH:
        obj = make(name, seed=0)  # the same initialisation on both ranks, as the loop seeds it
        model = DistributedDataParallel(obj, broadcast_buffers=False)
        opt = torch.optim.AdamW(obj.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(100 + rank)
        for step in range(2):
            res = model(obj.make_views(case_batch(name, seed=10 * step + rank), g))  # each rank its own batch
            opt.zero_grad()
            res.loss.backward()
            opt.step()
        out[(name, rank)] = (torch.cat([p.detach().flatten() for p in obj.parameters()]), res.loss.item())
    dist.destroy_process_group()


@pytest.mark.slow
def test_both_objectives_train_under_ddp_with_replicas_in_sync() -> None:
    out = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    for name in SPEECH:
        (p0, loss0), (p1, loss1) = out[(name, 0)], out[(name, 1)]
        assert torch.isfinite(torch.tensor([loss0, loss1])).all(), name
        assert loss0 != loss1  # the ranks saw different batches
        assert torch.equal(p0, p1), f"{name}: replicas diverged under DDP"
