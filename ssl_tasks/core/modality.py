"""The modality plug-in interface and its registry, ``MODALITIES``.

A modality is everything the stages need to know about one kind of data, so that
``ssl_tasks/pipeline/`` never tests a modality's name: how its ingested datasets are opened
(by the manifest's ``format``), its tokenizer (or target) stage, how a pretraining run on it is
prepared and fed, how its encoders are rebuilt from a checkpoint, which evaluation protocols apply,
and its baselines (random init, raw input, supervised ceiling). One package per modality,
``ssl_tasks/modalities/<name>/``, registers its ``Modality`` subclass with ``@MODALITIES.register(name)``;
``docs/ADDING_A_MODALITY.md`` walks through a complete one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ssl_tasks.core.errors import UserError
from ssl_tasks.core.io import atomic_dir, read_manifest, write_json_atomic
from ssl_tasks.core.registry import Registry

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

Say = Callable[[str], None]


@dataclass(frozen=True)
class NoTokenizer:
    """The ``datasets.<name>.tokenizer`` section of a modality without a tokenizer stage: no keys."""


@dataclass(frozen=True)
class EvalContext:
    """What a modality's evaluation and baselines read from the pipeline's params, plus a progress printer."""

    protocols: tuple[str, ...]
    settings: Any  # evaluation.protocols.EvalConfig
    finetune_views: Any  # the image fine-tuning views (image modalities)
    zero_shot: Any  # pipeline.params.ZeroShotParams (modalities with a text tower)
    seed: int
    batch_size: int
    say: Say


@dataclass(frozen=True)
class BaselineSpec:
    """One baseline a dataset gets: its kind (``random_init``, ``raw_pixels``, ``supervised``, or a modality's own
    such as ``unigram``), its row name prefix (``bag_of_words`` for text's raw input) and the configured encoder
    (recorded as "-" when the baseline builds none)."""

    kind: str
    name: str
    encoder_name: str
    encoder_kwargs: dict[str, Any]


@dataclass
class BaselineResult:
    metrics: dict[str, float]
    subsets: dict[str, np.ndarray]
    encoder: nn.Module | None


class Modality:
    """Base of the modality plug-ins. Subclasses set the class attributes and implement the methods.

    - ``formats``: the dataset manifest ``format`` values this modality reads;
    - ``trains``: the objective modalities its data feeds, first its own (image–text data also trains every image
      objective on its images);
    - ``protocol_kinds``: the ``ProtocolSpec.kind`` values that apply to its encoders;
    - ``tokenizer_config``: the typed ``datasets.<name>.tokenizer`` section (none by default).
    """

    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]
    trains: ClassVar[tuple[str, ...]]
    protocol_kinds: ClassVar[frozenset[str]]
    tokenizer_config: ClassVar[type] = NoTokenizer

    # ------------------------------------------------------------------ data

    def write_dataset(self, out: Path, result: Any, source: dict[str, Any], shard_size: int) -> dict[str, Any]:
        """Write what one of this modality's sources returned as a dataset at ``out`` (atomically); the manifest."""
        raise NotImplementedError

    def open(self, root: Path) -> Any:
        """The memory-mapped reader of an ingested dataset of this modality."""
        raise NotImplementedError

    def validation_suite(self, ds: Any, config: Any) -> tuple[Any, list[Any]]:
        """The Great Expectations suite of ``validate@<dataset>``: (tables, ``validation.gx_suite.Check`` list)."""
        raise NotImplementedError

    def train_tokenizer(self, data_dir: Path, out_dir: Path, cfg: Any, say: Say) -> dict[str, Any]:
        """The ``tokenizer@<dataset>`` stage: write ``out_dir`` atomically, return its summary (with ``seconds``).

        By default a modality has no tokenizer or targets: the stage writes only a summary saying so.
        """

        summary = {"tokenizer": "none", "modality": self.name, "seconds": 0.0}
        with atomic_dir(out_dir) as tmp:
            write_json_atomic(tmp / "summary.json", summary)
        say(f"{self.name} data needs no tokenizer; wrote {out_dir}")
        return summary

    # ------------------------------------------------------------------ pretraining

    def prepare_run(self, ds: Any, objective: type) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Refuse data the objective cannot use (``UserError``) and return the normalisation (mean, std)."""
        return (), ()

    def needs_tokenizer(self, objective: type) -> bool:
        """Whether a run of ``objective`` on this data reads the dataset's BPE tokenizer and keeps its heads."""
        return False

    def encoder_meta(self, ds: Any, tokenizer_file: Path | None) -> dict[str, Any]:
        """What ``build_encoder`` needs besides the encoder's name and kwargs, stored in ``meta.json``."""
        return {}

    def build_encoder(self, name: str, kwargs: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
        """A fresh encoder from its name, kwargs and the data facts of ``encoder_meta``."""
        raise NotImplementedError

    def feed(self, job: Any) -> Any:
        """What the training loop eats for a ``TrainJob`` whose objective trains in this modality."""
        raise NotImplementedError

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, ctx: EvalContext, encoder: nn.Module, ds: Any, meta: dict[str, Any], pretrain_dir: Path,
                 label: str, trained: bool = True) -> tuple[dict[str, float], dict[str, np.ndarray], list[str]]:
        """Every applicable protocol on a pretrained encoder: (metrics, label subsets, generated samples).

        ``trained=False``: ``encoder`` is a fresh, seeded one of the run's configuration (the run's random-init
        reference); everything else the run trained (heads, a text tower) is rebuilt fresh too, and protocols
        that only mean something for a trained model (perplexity) are skipped.
        """
        raise NotImplementedError

    def reference_config(self, meta: dict[str, Any]) -> dict[str, Any]:
        """What defines a run's untrained model: runs with equal configs (and seeds) share one random-init row."""
        return {"encoder": meta["encoder"], "encoder_kwargs": meta["encoder_kwargs"]}

    def baselines(self, ds: Any, cfg: Any, protocols: Sequence[str]) -> list[BaselineSpec]:
        """The baselines a dataset of this modality gets, from the ``baselines`` section ``cfg``."""
        raise NotImplementedError

    def run_baseline(self, ctx: EvalContext, spec: BaselineSpec, ds: Any, tokenizer_dir: Path, cfg: Any,
                     label: str) -> BaselineResult:
        """Build (for ``supervised``: train) one baseline's encoder and run the applicable protocols on it."""
        raise NotImplementedError

    # ------------------------------------------------------------------ description

    def describe(self) -> str:
        """One line for ``ssl-tasks list``."""
        return ", ".join(self.trains)


MODALITIES: Registry[type[Modality]] = Registry("modality")


def _registered() -> Registry[type[Modality]]:
    import ssl_tasks.modalities.builtin  # noqa: F401  (fills the registry)

    return MODALITIES


def modality_of(root: Path) -> Modality:
    """The modality whose format the dataset at ``root`` has."""
    fmt = read_manifest(root).get("format")
    reg = _registered()
    for name in reg:
        if fmt in reg.get(name).formats:
            return reg.get(name)()
    known = sorted(f for n in reg for f in reg.get(n).formats)
    raise UserError(f"{Path(root) / 'manifest.json'}: unknown dataset format {fmt!r}; known: {', '.join(known)}")


def open_dataset(root: Path) -> Any:
    """The reader of the dataset at ``root``, whatever its modality."""
    return modality_of(root).open(Path(root))


def get_modality(name: str) -> Modality:
    """The registered modality ``name`` (plug-ins are stateless: a fresh instance each time)."""
    return _registered().get(name)()


def trains_in(objective: type, data_modality: str) -> str:
    """The modality an objective trains in on data of ``data_modality`` (``image`` for SimCLR on image–text
    pairs), or a ``UserError``."""
    for m in get_modality(data_modality).trains:
        if m in objective.modalities:
            return m
    raise UserError(f"objective does not support modality {data_modality!r}; supports {sorted(objective.modalities)}")


def applicable(protocols: Sequence[str], kinds: frozenset[str]) -> list[str]:
    """The protocols among ``protocols`` whose kind is in ``kinds``."""
    from ssl_tasks.evaluation.protocols import PROTOCOLS

    return [p for p in protocols if PROTOCOLS.get(p).kind in kinds]
