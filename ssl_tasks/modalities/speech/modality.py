"""The speech modality plug-in: mono waveform shards (``ssl-tasks-speech/v1``), HuBERT's MFCC k-means targets as the
``tokenizer@<dataset>`` stage, the waveform feed, utterance probes with groups (speakers) held out, and the
random-init (per run), MFCC-statistics and supervised baselines.

Evaluation (``probes.py``): ``knn`` and ``linear`` report the leave-one-speaker-out mean as ``<protocol>/top1``
(the leaderboard's column), with its spread, worst speaker and the upstream split's score beside it; ``semi_1pct``
and ``semi_10pct`` fine-tune the encoder and a linear head on a class-balanced 1% / 10% of the upstream train
split and score its test split (the library's fine-tuning protocol; run once, not per speaker: six fine-tunings
per encoder would cost more than the pretraining here).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ssl_tasks.core.encoders import ENCODERS
from ssl_tasks.core.errors import UserError
from ssl_tasks.core.modality import MODALITIES, BaselineResult, BaselineSpec, EvalContext, Modality, Say, applicable
from ssl_tasks.modalities.speech import encoders as _encoders  # noqa: F401  (registers wav2vec2)
from ssl_tasks.modalities.speech import shards
from ssl_tasks.modalities.speech import sources as _sources  # noqa: F401  (registers audio_folder, audio_table)
from ssl_tasks.modalities.speech.feed import needs_targets, peak_normalise
from ssl_tasks.modalities.speech.targets import SpeechTargetConfig

ROW_NAMES = {"raw_pixels": "mfcc_stats", "supervised": "supervised"}
DEFAULT_BASELINE_ENCODER = "wav2vec2"


@dataclass
class EvalData:
    """Every clip of a dataset (all splits), as the probes read them."""

    waves: np.ndarray  # (N, T) stored rows
    lengths: np.ndarray  # (N,)
    labels: np.ndarray  # (N,)
    groups: np.ndarray  # (N,)
    is_test: np.ndarray  # (N,) bool: not in the upstream train split

    @classmethod
    def of(cls, ds: shards.SpeechDataset) -> EvalData:
        splits = ds.splits()
        col = lambda key: np.concatenate([ds.column(s, key) for s in splits])  # noqa: E731
        is_test = np.concatenate([np.full(ds.count(s), s != "train") for s in splits])
        return cls(col("waves"), col("lengths").astype(np.int64), col("labels").astype(np.int64),
                   col("groups").astype(np.int64), is_test)

    def packed(self, idx: np.ndarray) -> np.ndarray:
        """float32 (n, T + 1): peak-normalised rows with their length in the last column (``PackedSpeech``)."""
        x = peak_normalise(self.waves[idx], self.lengths[idx])
        return np.concatenate([x, self.lengths[idx, None].astype(np.float32)], axis=1)


class PackedSpeech(nn.Module):
    """A speech encoder taking one float32 (B, T + 1) tensor (the wave, then the length), so the library's
    fine-tuning and supervised loops, which call ``model(x)``, drive it."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.out_dim = int(encoder.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x[:, :-1], x[:, -1].round().long())  # (B, D)


@MODALITIES.register("speech")
class SpeechModality(Modality):
    name: ClassVar[str] = "speech"
    formats: ClassVar[tuple[str, ...]] = (shards.FORMAT,)
    trains: ClassVar[tuple[str, ...]] = ("speech",)
    protocol_kinds: ClassVar[frozenset[str]] = frozenset({"frozen", "finetune"})
    tokenizer_config: ClassVar[type] = SpeechTargetConfig

    def write_dataset(self, out: Path, result: Any, source: dict[str, Any], shard_size: int) -> dict[str, Any]:
        return shards.write_speech_dataset(out, result, source, shard_size)

    def open(self, root: Path) -> shards.SpeechDataset:
        return shards.SpeechDataset(Path(root))

    def validation_suite(self, ds: Any, config: Any) -> tuple[Any, list[Any]]:
        from ssl_tasks.modalities.speech.checks import build_speech_tables, speech_suite

        tables = build_speech_tables(ds)
        return tables, speech_suite(tables, config)

    def train_tokenizer(self, data_dir: Path, out_dir: Path, cfg: Any, say: Say) -> dict[str, Any]:
        from ssl_tasks.modalities.speech.targets import train_targets

        return train_targets(data_dir, out_dir, cfg, say)

    # ------------------------------------------------------------------ pretraining

    def prepare_run(self, ds: Any, objective: type) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if "train" not in ds.splits():
            raise UserError(f"{ds.root}: pretraining reads the train split; splits: {', '.join(ds.splits())}")
        return (), ()

    def needs_tokenizer(self, objective: type) -> bool:
        return needs_targets(objective)

    def encoder_meta(self, ds: Any, tokenizer_file: Path | None) -> dict[str, Any]:
        return {"sample_rate": ds.sample_rate, "num_samples": ds.num_samples}

    def build_encoder(self, name: str, kwargs: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
        cls = ENCODERS.get(name)
        if getattr(cls, "modality", None) != "speech":
            raise UserError(f"encoder {name!r} does not encode speech; speech encoders: "
                            f"{', '.join(n for n in ENCODERS.names() if getattr(ENCODERS.get(n), 'modality', '') == 'speech')}")
        return cls(**kwargs)

    def feed(self, job: Any) -> Any:
        from ssl_tasks.modalities.speech.feed import speech_feed

        return speech_feed(job)

    # ------------------------------------------------------------------ evaluation

    def _protocols(self, ctx: EvalContext, encoder: nn.Module | None, data: EvalData, ds: Any,
                   label: str) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Frozen probes (held-out groups and upstream) and the fine-tuning protocols; ``encoder=None``: MFCC."""
        from ssl_tasks.modalities.speech.probes import mfcc_statistics, speech_protocols, utterance_embeddings

        wanted = applicable(ctx.protocols, self.protocol_kinds)
        if not wanted or not ds.num_classes or (data.labels < 0).any():
            ctx.say(f"{label}: no protocol applies or some clips are unlabelled: speech probes skipped")
            return {}, {}
        t0 = time.perf_counter()
        if encoder is None:
            f = mfcc_statistics(data.waves, data.lengths, ds.sample_rate, f_max=ds.band_limit)
        else:
            f = utterance_embeddings(encoder, data.waves, data.lengths, batch_size=ctx.settings.batch_size)
        metrics = speech_protocols(f, data.labels, data.groups, data.is_test, wanted, ds.num_classes,
                                   k=ctx.settings.k, temperature=ctx.settings.temperature)
        metrics_ft, subsets = self._finetune(ctx, encoder, data, f, ds, wanted, label)
        metrics.update(metrics_ft)
        ctx.say(f"{label}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.endswith("top1"))
                + f" ({time.perf_counter() - t0:.1f} s)")
        return metrics, subsets

    def _finetune(self, ctx: EvalContext, encoder: nn.Module | None, data: EvalData, f: np.ndarray, ds: Any,
                  wanted: list[str], label: str) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """1% / 10% of the upstream train split (class-balanced): the encoder fine-tuned with a linear head, or for
        the MFCC row logistic regression on the subset's statistics; scored on the upstream test split."""
        from ssl_tasks.evaluation.finetune import balanced_subset, finetune_top1
        from ssl_tasks.evaluation.protocols import PROTOCOLS
        from ssl_tasks.modalities.speech.probes import logistic_top1

        train, test = np.flatnonzero(~data.is_test), np.flatnonzero(data.is_test)
        metrics, subsets = {}, {}
        for name in (p for p in wanted if PROTOCOLS.get(p).kind == "finetune"):
            if not len(test):
                continue
            picked = balanced_subset(data.labels[train], PROTOCOLS.get(name).fraction, ctx.settings.seed)
            subsets[name] = picked  # rows of the train split, as every modality records them
            sub = train[picked]
            if encoder is None:
                metrics[f"{name}/top1"] = logistic_top1(f[sub], data.labels[sub], f[test], data.labels[test])
                continue
            s = ctx.settings
            ctx.say(f"{label}: {name}: fine-tuning on {len(sub)} labelled clips for {s.finetune_epochs} epochs")
            metrics[f"{name}/top1"] = finetune_top1(
                PackedSpeech(encoder), data.packed(sub), data.labels[sub], data.packed(test), data.labels[test],
                num_classes=ds.num_classes, views=None, mean=(), std=(), epochs=s.finetune_epochs, lr=s.finetune_lr,
                batch_size=s.finetune_batch_size, seed=s.seed, progress=lambda line: ctx.say(f"{label}: {line}"))
        return metrics, subsets

    def evaluate(self, ctx: EvalContext, encoder: nn.Module, ds: Any, meta: dict[str, Any], pretrain_dir: Path,
                 label: str, trained: bool = True) -> tuple[dict[str, float], dict[str, np.ndarray], list[str]]:
        metrics, subsets = self._protocols(ctx, encoder, EvalData.of(ds), ds, label)
        return metrics, subsets, []

    def baselines(self, ds: Any, cfg: Any, protocols: Any) -> list[BaselineSpec]:
        if not ds.num_classes:
            return []
        name, kwargs = cfg.encoder, dict(cfg.encoder_kwargs)
        if getattr(ENCODERS.get(name), "modality", None) != "speech":
            name, kwargs = DEFAULT_BASELINE_ENCODER, {}
        return [BaselineSpec(k, ROW_NAMES[k], name, kwargs) for k in cfg.include if k in ROW_NAMES]

    def run_baseline(self, ctx: EvalContext, spec: BaselineSpec, ds: Any, tokenizer_dir: Path, cfg: Any,
                     label: str) -> BaselineResult:
        data = EvalData.of(ds)
        if spec.kind == "raw_pixels":
            metrics, subsets = self._protocols(ctx, None, data, ds, label)
            return BaselineResult(metrics, subsets, None)
        return self._supervised(ctx, spec, data, ds, cfg, label)

    def _supervised(self, ctx: EvalContext, spec: BaselineSpec, data: EvalData, ds: Any, cfg: Any,
                    label: str) -> BaselineResult:
        """The supervised ceiling: the encoder + a linear head trained on the labels of the clips a protocol fits on
        (for each held-out group: the other groups; for the upstream split: its train split), then the frozen
        probes on that encoder's embeddings of the held-out clips."""
        from ssl_tasks.modalities.speech.probes import folds, speech_protocols, utterance_embeddings
        from ssl_tasks.training.supervised import train_supervised

        if spec.encoder_name not in ENCODERS.names():
            raise UserError(f"the supervised speech baseline trains encoder {spec.encoder_name!r}, which is not "
                            "registered; set baselines.encoder to a speech encoder")
        wanted = [p for p in applicable(ctx.protocols, frozenset({"frozen"})) if p in ("linear", "knn")]
        if not wanted or not ds.num_classes or (data.labels < 0).any():
            return BaselineResult({}, {}, None)

        def trained(fit: np.ndarray, what: str) -> nn.Module:
            torch.manual_seed(ctx.seed)
            enc = self.build_encoder(spec.encoder_name, spec.encoder_kwargs, {})
            ctx.say(f"{label}: supervised training of {spec.encoder_name} on {len(fit)} clips ({what}) for "
                    f"{cfg.supervised_epochs} epochs")
            train_supervised(PackedSpeech(enc), data.packed(fit), data.labels[fit], num_classes=ds.num_classes,
                             views=None, epochs=max(int(cfg.supervised_epochs), 1), lr=cfg.supervised_lr,
                             batch_size=ctx.batch_size, seed=ctx.seed, log=lambda s: ctx.say(f"{label}: {s}"))
            return enc

        per_fold: list[dict[str, float]] = []
        names = ds.group_names
        for g, fit, held in folds(data.groups) if (data.groups >= 0).all() else []:
            enc = trained(fit, f"{names[g] if g < len(names) else g} held out")
            f = utterance_embeddings(enc, data.waves, data.lengths)
            per_fold.append({p: self._held_out(p, f, data, fit, held, ctx, ds) for p in wanted})
        metrics: dict[str, float] = {}
        for p in wanted if per_fold else []:
            accs = [r[p] for r in per_fold]
            metrics.update({f"{p}/top1": float(np.mean(accs)), f"{p}/loso_std": float(np.std(accs)),
                            f"{p}/loso_min": float(np.min(accs))})
        encoder = None
        if data.is_test.any():
            encoder = trained(np.flatnonzero(~data.is_test), "upstream train split")
            f = utterance_embeddings(encoder, data.waves, data.lengths)
            up = speech_protocols(f, data.labels, np.full(len(f), -1), data.is_test, wanted, ds.num_classes,
                                  k=ctx.settings.k, temperature=ctx.settings.temperature)
            metrics.update({k: v for k, v in up.items() if k.endswith("upstream_top1")})
            for p in wanted:
                metrics.setdefault(f"{p}/top1", up[f"{p}/upstream_top1"])
        ctx.say(f"{label}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.endswith("top1")))
        return BaselineResult(metrics, {}, encoder)

    @staticmethod
    def _held_out(p: str, f: np.ndarray, data: EvalData, fit: np.ndarray, held: np.ndarray,
                  ctx: EvalContext, ds: Any) -> float:
        from ssl_tasks.modalities.speech.probes import knn_top1, logistic_top1

        if p == "linear":
            return logistic_top1(f[fit], data.labels[fit], f[held], data.labels[held])
        return knn_top1(f[fit], data.labels[fit], f[held], data.labels[held], ds.num_classes, ctx.settings.k,
                        ctx.settings.temperature)

    def describe(self) -> str:
        return ("mono waveform shards + HuBERT MFCC k-means targets; speech encoders; k-NN and linear probes with "
                "speakers held out, 1%/10% fine-tuning")
