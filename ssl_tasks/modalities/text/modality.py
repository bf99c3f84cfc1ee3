"""The text modality plug-in: token-free text shards, a byte-level BPE tokenizer stage, transformer encoders, the
classification protocols on one padded sentence per row, (pseudo-)perplexity for language models, and the
random-init, bag-of-words, supervised and unigram baselines."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import nn

from ssl_tasks.core.modality import (
    MODALITIES,
    BaselineResult,
    BaselineSpec,
    EvalContext,
    Modality,
    Say,
    applicable,
)
from ssl_tasks.modalities.text import shards as text_shards
from ssl_tasks.modalities.text import sources as _sources  # noqa: F401  (registers the text sources)
from ssl_tasks.modalities.text import stages

ROW_NAMES = {"raw_pixels": "bag_of_words", "supervised": "supervised"}


@dataclass(frozen=True)
class TextTokenizerConfig:
    """The dataset's subword tokenizer (byte-level BPE, the ``tokenizer@<dataset>`` stage) for every text run."""

    vocab_size: int = 4096
    num_sentinels: int = 32  # T5's span sentinels
    min_frequency: int = 2
    lowercase: bool = False

    def __post_init__(self) -> None:
        if self.vocab_size < 300:
            raise ValueError(f"vocab_size must be >= 300 (256 bytes + specials), got {self.vocab_size}")
        if not 0 <= self.num_sentinels <= 1000 or self.min_frequency < 1:
            raise ValueError("num_sentinels must be in [0, 1000] and min_frequency >= 1")


def train_bpe(data_dir: Path, out_dir: Path, cfg: Any, say: Say) -> dict[str, Any]:
    """The BPE tokenizer stage of text datasets and of image–text datasets' captions."""
    say(f"byte-level BPE, vocabulary {cfg.vocab_size}, {cfg.num_sentinels} sentinels")
    summary = stages.train_tokenizer_stage(data_dir, out_dir, cfg)
    say(f"{summary['vocab_size']} tokens from {summary['texts']} texts, {summary['mean_tokens_per_text']} tokens "
        f"per text on average ({summary['seconds']:.1f} s); wrote {out_dir}")
    return summary


@MODALITIES.register("text")
class TextModality(Modality):
    name: ClassVar[str] = "text"
    formats: ClassVar[tuple[str, ...]] = (text_shards.FORMAT,)
    trains: ClassVar[tuple[str, ...]] = ("text",)
    protocol_kinds: ClassVar[frozenset[str]] = frozenset({"frozen", "finetune", "language"})
    tokenizer_config: ClassVar[type] = TextTokenizerConfig

    def write_dataset(self, out: Path, result: Any, source: dict[str, Any], shard_size: int) -> dict[str, Any]:
        return text_shards.write_text_dataset(out, result.splits, label_names=result.label_names, source=source,
                                              shard_size=shard_size)

    def open(self, root: Path) -> text_shards.TextDataset:
        return text_shards.TextDataset(Path(root))

    def validation_suite(self, ds: Any, config: Any) -> tuple[Any, list[Any]]:
        from ssl_tasks.modalities.text.checks import build_text_tables, text_suite

        tables = build_text_tables(ds)
        return tables, text_suite(tables, config)

    def train_tokenizer(self, data_dir: Path, out_dir: Path, cfg: Any, say: Say) -> dict[str, Any]:
        return train_bpe(data_dir, out_dir, cfg, say)

    # ------------------------------------------------------------------ pretraining

    def needs_tokenizer(self, objective: type) -> bool:
        return True

    def encoder_meta(self, ds: Any, tokenizer_file: Path | None) -> dict[str, Any]:
        from ssl_tasks.modalities.text.tokenizer import TextTokenizer

        tok = TextTokenizer.load(tokenizer_file)
        return {"vocab_size": tok.vocab_size, "pad_id": tok.pad_id}

    def build_encoder(self, name: str, kwargs: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
        from ssl_tasks.modalities.text.encoders import build_text_encoder

        return build_text_encoder(name, meta["vocab_size"], meta["pad_id"], **kwargs)

    def feed(self, job: Any) -> Any:
        from ssl_tasks.modalities.text.feed import text_feed

        return text_feed(job)

    # ------------------------------------------------------------------ evaluation

    def _classification(self, ctx: EvalContext, encoder: nn.Module | None, ds: Any, tokenizer_file: Path,
                        max_len: int, label: str) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """The classification protocols: one padded sentence per row; skipped when the data is unlabelled."""
        from ssl_tasks.evaluation.protocols import run_protocols
        from ssl_tasks.modalities.text.tokenizer import TextTokenizer

        wanted = applicable(ctx.protocols, frozenset({"frozen", "finetune"}))
        if not wanted:
            return {}, {}
        if not stages.is_labelled(ds):
            ctx.say(f"{label}: {ds.root.name} is not fully labelled: {', '.join(wanted)} skipped")
            return {}, {}
        train, test = stages.labelled_rows(ds, TextTokenizer.load(tokenizer_file), max_len)
        return run_protocols(ctx, encoder, train, test, num_classes=ds.num_classes, label=label, protocols=wanted)

    def evaluate(self, ctx: EvalContext, encoder: nn.Module, ds: Any, meta: dict[str, Any], pretrain_dir: Path,
                 label: str, trained: bool = True) -> tuple[dict[str, float], dict[str, np.ndarray], list[str]]:
        max_len = int(meta["encoder_kwargs"].get("max_len", stages.DEFAULT_MAX_LEN))
        metrics, subsets = self._classification(ctx, encoder, ds, pretrain_dir / stages.TOKENIZER_FILE, max_len,
                                                label)
        if not trained:  # a random-init language model's perplexity says nothing the unigram row does not
            return metrics, subsets, []
        lm, samples = stages.language_metrics(meta, pretrain_dir, ds, ctx.protocols,
                                              say=lambda line: ctx.say(f"{label}: {line}"))
        return {**metrics, **lm}, subsets, samples

    def baselines(self, ds: Any, cfg: Any, protocols: Any) -> list[BaselineSpec]:
        specs = []
        if stages.is_labelled(ds):
            specs = [BaselineSpec(k, ROW_NAMES[k], cfg.text_encoder, cfg.text_encoder_kwargs) for k in cfg.include]
        if applicable(protocols, frozenset({"language"})):
            specs.append(BaselineSpec("unigram", "unigram", cfg.text_encoder, cfg.text_encoder_kwargs))
        return specs

    def run_baseline(self, ctx: EvalContext, spec: BaselineSpec, ds: Any, tokenizer_dir: Path, cfg: Any,
                     label: str) -> BaselineResult:
        from ssl_tasks.modalities.text.tokenizer import TextTokenizer
        from ssl_tasks.training.supervised import train_supervised

        tok_file = tokenizer_dir / stages.TOKENIZER_FILE
        tok = TextTokenizer.load(tok_file)
        max_len = int(spec.encoder_kwargs.get("max_len", stages.DEFAULT_MAX_LEN))
        if spec.kind == "unigram":
            metrics = stages.unigram_row(ds, tok_file, max_len)
            ctx.say(f"{label}: unigram perplexity {metrics['perplexity/ppl']:.2f}")
            return BaselineResult(metrics, {}, None)
        encoder = None
        if spec.kind != "raw_pixels":
            encoder = self.build_encoder(spec.encoder_name, spec.encoder_kwargs,
                                         {"vocab_size": tok.vocab_size, "pad_id": tok.pad_id})
        if spec.kind == "supervised":
            (x, y), _ = stages.labelled_rows(ds, tok, max_len)
            ctx.say(f"{label}: supervised training of {spec.encoder_name} for {cfg.supervised_epochs} epochs")
            t0 = time.perf_counter()
            train_supervised(encoder, x, y, num_classes=ds.num_classes, views=None, epochs=cfg.supervised_epochs,
                             lr=cfg.supervised_lr, batch_size=ctx.batch_size, seed=ctx.seed,
                             log=lambda s: ctx.say(f"{label}: {s}"))
            ctx.say(f"{label}: supervised training took {time.perf_counter() - t0:.0f} s")
        metrics, subsets = self._classification(ctx, encoder, ds, tok_file, max_len, label)
        return BaselineResult(metrics, subsets, encoder)

    def describe(self) -> str:
        return "text shards + a BPE tokenizer stage; transformer encoders; k-NN, linear, 1%/10%, (pseudo-)perplexity"
