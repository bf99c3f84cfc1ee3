"""Every registered objective honours the interface contract (STYLE.md, habit 10)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from objective_cases import CASES, build_case_encoder, case_batch, spec_for

from ssl_tasks.core.config import build
from ssl_tasks.core.ema import update_momentum
from ssl_tasks.core.errors import UserError
from ssl_tasks.core.modality import open_dataset
from ssl_tasks.objectives import OBJECTIVES, Objective, StepResult
from ssl_tasks.training.config import TrainConfig, TrainJob, objective_config
from ssl_tasks.training.loop import LocalSession, make_optimizer, run_training


def make(name: str, seed: int = 0) -> Objective:
    torch.manual_seed(seed)
    cls, case = OBJECTIVES.get(name), CASES[name]
    cfg = build(cls.Config, case.objective_kwargs, name)
    return cls(build_case_encoder(name), cfg, spec_for(name))


def batch(name: str, seed: int = 0) -> torch.Tensor:
    return case_batch(name, seed)


def step(obj: Objective, x: torch.Tensor, seed: int = 0) -> StepResult:
    g = torch.Generator().manual_seed(seed)
    return obj(obj.make_views(x, g))


def teacher_params(obj: Objective) -> list[torch.nn.Parameter]:
    return [p for _, t in obj.momentum_pairs() for p in t.parameters()]


@pytest.fixture(params=OBJECTIVES.names())
def name(request: pytest.FixtureRequest) -> str:
    if request.param == "beit":  # BEiT reads a tokenizer file: fitted on the digits once per session, when needed
        CASES["beit"].objective_kwargs["tokenizer"] = str(request.getfixturevalue("beit_tokenizer"))
    return request.param


def test_registry_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="already registered"):
        OBJECTIVES.register("simclr")(object)


def test_every_objective_has_a_case() -> None:
    assert sorted(CASES) == OBJECTIVES.names()


def test_step_result_is_finite_with_named_terms(name: str) -> None:
    res = step(make(name), batch(name))
    assert isinstance(res, StepResult)
    assert res.loss.ndim == 0 and torch.isfinite(res.loss)
    assert res.terms and all(k.endswith("_loss") for k in res.terms)
    assert all(not t.requires_grad for t in res.terms.values())
    h1, h2 = res.embeddings
    obj = make(name)
    dim = obj.cfg.embed_dim if CASES[name].pair else obj.encoder.out_dim  # image-text: the shared space
    assert h1.shape == h2.shape == (16, dim) and not h1.requires_grad


def test_gradients_reach_online_network_not_target(name: str) -> None:
    obj = make(name)
    step(obj, batch(name)).loss.backward()
    online = [p for p in obj.encoder.parameters()]
    assert all(p.grad is not None for p in online)
    assert sum(float(p.grad.abs().sum()) for p in online) > 0
    for p in teacher_params(obj):
        assert p.grad is None and not p.requires_grad


def test_optimizer_excludes_teacher_and_ema_moves_it(name: str) -> None:
    obj = make(name)
    opt = make_optimizer(obj, TrainConfig(lr=0.05))
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    teachers = teacher_params(obj)
    assert not any(id(p) in in_opt for p in teachers)
    before = [p.detach().clone() for p in teachers]
    res = step(obj, batch(name))
    opt.zero_grad()
    res.loss.backward()
    opt.step()
    for s, t in obj.momentum_pairs():
        update_momentum(s, t, obj.momentum(0.0))
    if not teachers:
        assert obj.momentum_pairs() == []  # nothing to move (e.g. SimCLR)
        return
    moved = sum(float((a - b.detach()).abs().sum()) for a, b in zip(before, teachers))
    assert moved > 0
    assert 0 < obj.momentum(0.0) < 1


def test_forward_takes_views_only(name: str) -> None:
    cls = OBJECTIVES.get(name)
    assert list(inspect.signature(cls.forward).parameters) == ["self", "views"]
    assert list(inspect.signature(cls.make_views).parameters) == ["self", "x", "g"]


def _job(name: str, data: Path, seed: int = 0, tokenizer: Path | None = None) -> TrainJob:
    case, spec = CASES[name], spec_for(name)
    mean, std = (((), ()) if case.text or case.graph or case.speech else (spec.image.mean, spec.image.std) if case.pair
                 else (spec.mean, spec.std))
    return TrainJob(run=name, seed=seed, data_dir=str(data), objective=name,
                    objective_config=objective_config(name, case.objective_kwargs),
                    encoder=case.encoder, encoder_kwargs=case.encoder_kwargs,
                    train=TrainConfig(epochs=1, batch_size=16 if case.speech or case.video
                                      else 64 if case.colour or case.text or case.pair else 128),
                    mean=mean, std=std, tokenizer=str(tokenizer or ""))


@pytest.fixture
def dataset_for(request: pytest.FixtureRequest):  # noqa: ANN201
    """The real dataset an objective's contract runs on: digits, the CIFAR-10 JPEG subset for colour, the
    SST-2 subset (with its tokenizer) for text, generated clips for speech (with HuBERT's targets), moving
    Fashion-MNIST sprites for video."""

    def get(name: str) -> tuple[Path, Path | None]:
        case = CASES[name]
        if case.speech:  # generated clips through the audio_table source; HuBERT reads the targets stage's file
            return request.getfixturevalue("speech_dataset"), (request.getfixturevalue("speech_targets")
                                                               if name == "hubert" else None)
        if case.graph:
            return request.getfixturevalue("graph_dataset"), None
        if case.video:
            return request.getfixturevalue("video_dataset"), None
        if case.text:
            return request.getfixturevalue("text_dataset"), request.getfixturevalue("text_tokenizer")
        if case.pair:
            return request.getfixturevalue("pair_dataset"), request.getfixturevalue("pair_tokenizer")
        return request.getfixturevalue("colour_dataset" if case.colour else "digits_dataset"), None

    return get


def test_training_never_reads_labels(name: str, dataset_for, tmp_path: Path) -> None:  # noqa: ANN001
    """Copy the dataset, destroy every label file, and train: it must not notice."""
    import shutil

    data = tmp_path / "nolabels"
    src, tokenizer = dataset_for(name)
    shutil.copytree(src, data)
    for f in data.rglob("*.labels.npy"):
        f.write_bytes(b"this is not a label file")
    session = LocalSession(tmp_path / "ckpt")
    run_training(_job(name, data, tokenizer=tokenizer), session)
    assert len(session.reports) == 1 and session.latest_checkpoint() is not None
    with pytest.raises((ValueError, UserError)):  # and the labels really are unreadable
        open_dataset(data).load("train")


def test_two_seeded_runs_are_equal(name: str, dataset_for, tmp_path: Path) -> None:  # noqa: ANN001
    data, tokenizer = dataset_for(name)
    states = []
    for i in range(2):
        session = LocalSession(tmp_path / f"run{i}")
        run_training(_job(name, data, seed=7, tokenizer=tokenizer), session)
        states.append(torch.load(session.latest_checkpoint() / "state.pt", weights_only=True)["objective"])
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    other = LocalSession(tmp_path / "other")
    run_training(_job(name, data, seed=8, tokenizer=tokenizer), other)
    s3 = torch.load(other.latest_checkpoint() / "state.pt", weights_only=True)["objective"]
    assert any(not torch.equal(states[0][k], s3[k]) for k in s3 if s3[k].dtype.is_floating_point)
