"""The image–text modality plug-in: image shards with captions. It composes the image modality (its images go
through every image protocol and train every image objective) and the text modality's BPE tokenizer (over the
captions); two-tower objectives (CLIP, SigLIP) add zero-shot and retrieval, and its baselines add random-init
towers and a bag-of-words model to the image baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import nn

from ssl_tasks.core.modality import MODALITIES, BaselineResult, BaselineSpec, EvalContext, Say
from ssl_tasks.modalities.image.modality import ImageModality
from ssl_tasks.modalities.image_text import shards as pair_shards
from ssl_tasks.modalities.image_text import sources as _sources  # noqa: F401  (registers the pair sources)
from ssl_tasks.modalities.text.modality import TextTokenizerConfig, train_bpe


def two_tower(objective: type) -> bool:
    """Whether ``objective`` trains (and keeps) a text tower beside its image encoder."""
    from ssl_tasks.objectives.image_text import ImageTextObjective

    return issubclass(objective, ImageTextObjective)


@MODALITIES.register("image_text")
class ImageTextModality(ImageModality):
    name: ClassVar[str] = "image_text"
    formats: ClassVar[tuple[str, ...]] = (pair_shards.FORMAT,)
    trains: ClassVar[tuple[str, ...]] = ("image_text", "image")
    protocol_kinds: ClassVar[frozenset[str]] = frozenset({"frozen", "finetune", "image_text"})
    tokenizer_config: ClassVar[type] = TextTokenizerConfig

    def write_dataset(self, out: Path, result: Any, source: dict[str, Any], shard_size: int) -> dict[str, Any]:
        return pair_shards.write_pair_dataset(out, result.splits, image_shape=result.image_shape,
                                              label_names=result.label_names, source=source, shard_size=shard_size)

    def open(self, root: Path) -> pair_shards.PairDataset:
        return pair_shards.PairDataset(Path(root))

    def validation_suite(self, ds: Any, config: Any) -> tuple[Any, list[Any]]:
        from ssl_tasks.modalities.image_text.checks import build_pair_tables, pair_suite

        tables = build_pair_tables(ds)
        return tables, pair_suite(tables, config)

    def train_tokenizer(self, data_dir: Path, out_dir: Path, cfg: Any, say: Say) -> dict[str, Any]:
        return train_bpe(data_dir, out_dir, cfg, say)  # over the captions

    def needs_tokenizer(self, objective: type) -> bool:
        return two_tower(objective)

    def feed(self, job: Any) -> Any:
        from ssl_tasks.modalities.image_text.feed import pair_feed

        return pair_feed(job)

    def evaluate(self, ctx: EvalContext, encoder: nn.Module, ds: Any, meta: dict[str, Any], pretrain_dir: Path,
                 label: str, trained: bool = True) -> tuple[dict[str, float], dict[str, np.ndarray], list[str]]:
        from ssl_tasks.modalities.image_text.towers import build_two_tower, load_two_tower, tower_metrics
        from ssl_tasks.modalities.text.stages import TOKENIZER_FILE
        from ssl_tasks.modalities.text.tokenizer import TextTokenizer
        from ssl_tasks.objectives import OBJECTIVES
        from ssl_tasks.training.config import objective_config_from

        metrics, subsets, _ = super().evaluate(ctx, encoder, ds, meta, pretrain_dir, label, trained)
        if two_tower(OBJECTIVES.get(meta["objective"])):
            if trained:
                obj, tok = load_two_tower(meta, pretrain_dir, ds)
            else:  # fresh towers of the run's configuration
                tok = TextTokenizer.load(pretrain_dir / TOKENIZER_FILE)
                obj = build_two_tower(meta["objective"], objective_config_from(meta), meta["encoder"],
                                      meta["encoder_kwargs"], ds, tok, meta["mean"], meta["std"])
            metrics.update(tower_metrics(obj, tok, ds, ctx.protocols, ctx.zero_shot,
                                         say=lambda line: ctx.say(f"{label}: {line}")))
        return metrics, subsets, []

    def reference_config(self, meta: dict[str, Any]) -> dict[str, Any]:
        from ssl_tasks.objectives import OBJECTIVES

        config = super().reference_config(meta)
        if two_tower(OBJECTIVES.get(meta["objective"])):  # the text tower and the shared space too
            kwargs = {k: v for k, v in meta.get("objective_kwargs", {}).items()
                      if k not in ("init_image", "lock_image")}
            config.update(objective=meta["objective"], objective_kwargs=kwargs)
        return config

    def run_baseline(self, ctx: EvalContext, spec: BaselineSpec, ds: Any, tokenizer_dir: Path, cfg: Any,
                     label: str) -> BaselineResult:
        """The image baseline; the raw-input one adds zero-shot / retrieval of bags of words."""
        from ssl_tasks.modalities.image_text.towers import bow_metrics
        from ssl_tasks.modalities.text.stages import TOKENIZER_FILE
        from ssl_tasks.modalities.text.tokenizer import TextTokenizer

        result = super().run_baseline(ctx, spec, ds, tokenizer_dir, cfg, label)
        if spec.kind == "raw_pixels":
            tok = TextTokenizer.load(tokenizer_dir / TOKENIZER_FILE)
            result.metrics.update(bow_metrics(ds, tok, ctx.protocols, ctx.zero_shot,
                                              say=lambda line: ctx.say(f"{label}: {line}")))
        return result

    def describe(self) -> str:
        return ("image shards + captions; image objectives on the images, CLIP/SigLIP two towers; image protocols "
                "+ zero-shot, retrieval")
