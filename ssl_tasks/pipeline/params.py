"""params.yaml, parsed once at the edge into typed configs; every mistake is named."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ssl_tasks.core.config import build, load_yaml
from ssl_tasks.core.encoders import ENCODERS
from ssl_tasks.core.errors import UserError
from ssl_tasks.core.modality import get_modality
from ssl_tasks.core.plugins import load_plugins
from ssl_tasks.evaluation.protocols import PROTOCOLS, EvalConfig
from ssl_tasks.modalities.image.views import ImageViewConfig
from ssl_tasks.objectives import OBJECTIVES
from ssl_tasks.objectives.base import check_compatible
from ssl_tasks.training.config import TrainConfig, objective_config
from ssl_tasks.validation import ValidationConfig


@dataclass(frozen=True)
class DatasetParams:
    source: str
    path: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # source options, e.g. text_column, unit
    test_fraction: float = 0.2
    split_seed: int = 0
    shard_size: int = 8192
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    # the dataset's tokenizer stage: the keys of its modality's ``tokenizer_config``
    tokenizer: dict[str, Any] = field(default_factory=dict)
    # the dataset baselines its runs are read against (raw_pixels, supervised); unset: ``baselines.include``
    baselines: tuple[str, ...] | None = None
    # ``tokenizer`` typed once by ``parse_params`` (not a key of params.yaml)
    tokenizer_config: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def modality(self) -> str:
        from ssl_tasks.data.ingest import SOURCES  # every built-in source registered

        return getattr(SOURCES.get(self.source), "modality", "image")

    def tokenizer_params(self, where: str = "") -> Any:
        """The typed tokenizer section (its modality's ``tokenizer_config``), as ``parse_params`` built it."""
        if self.tokenizer_config is not None:
            return self.tokenizer_config
        cls = get_modality(self.modality).tokenizer_config
        return build(cls, self.tokenizer, f"{where}.tokenizer" if where else "tokenizer")


@dataclass(frozen=True)
class RunParams:
    dataset: str
    objective: str
    encoder: str = "small_cnn"
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    objective_kwargs: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)  # overrides of the shared ``train`` section
    seeds: tuple[int, ...] | None = None  # overrides the top-level ``seeds`` for this run
    init_encoder: str = ""  # an encoder.pt to start from (e.g. another run's pretrain/seed-0/encoder.pt)
    # typed once by ``parse_params`` (not keys of params.yaml): the objective class's ``Config`` from
    # ``objective_kwargs`` (with the dataset's tokenizer filled in for objectives that read one), and the shared
    # ``train`` section with this run's overrides
    objective_config: Any = field(default=None, init=False, repr=False, compare=False)
    train_config: TrainConfig | None = field(default=None, init=False, repr=False, compare=False)


@dataclass(frozen=True)
class ZeroShotParams:
    """Zero-shot prompts: every template (with ``{}``) is filled with each class name and the embeddings averaged."""

    templates: tuple[str, ...] = ("a drawing of {}.", "clip art of {}.", "an icon of {}.", "a picture of {}.", "{}")
    class_names: dict[str, str] = field(default_factory=dict)  # label name -> the words put in the prompts

    def __post_init__(self) -> None:
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ValueError(f"every zero-shot template needs a {{}} for the class name; got {list(self.templates)}")


@dataclass(frozen=True)
class EvaluationParams:
    protocols: tuple[str, ...] = ("knn", "linear", "semi_1pct", "semi_10pct")
    zero_shot: ZeroShotParams = field(default_factory=ZeroShotParams)
    settings: EvalConfig = field(default_factory=EvalConfig)
    finetune_views: ImageViewConfig = field(
        default_factory=lambda: ImageViewConfig(crop_scale=(0.6, 1.0), jitter_p=0.0, grayscale_p=0.0, hflip_p=0.5)
    )


@dataclass(frozen=True)
class BaselineParams:
    encoder: str = "small_cnn"
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    # per dataset: raw_pixels (pixels; a bag of words for text and captions) and the supervised ceiling. Random init
    # is no dataset baseline: every run is evaluated next to random init of its own encoder (evaluate@<run>).
    # The supervised ceiling trains an encoder for supervised_epochs (most of a small pipeline's time), so it is
    # opt-in: list it here for every dataset, or in datasets.<name>.baselines for one.
    include: tuple[str, ...] = ("raw_pixels",)
    supervised_epochs: int = 20
    supervised_lr: float = 2e-3
    text_encoder: str = "text_transformer"  # the supervised ceiling's encoder on text datasets
    text_encoder_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrackingParams:
    experiment: str = "ssl-tasks"


@dataclass(frozen=True)
class RayParams:
    address: str | None = None
    # a shared store (s3://bucket/prefix, ...) for checkpoints and the files workers read, when the cluster's nodes
    # share no filesystem; else SSL_TASKS_STORAGE, else the project's disk (ssl_tasks/training/store.py)
    storage: str | None = None


@dataclass(frozen=True)
class Params:
    datasets: dict[str, DatasetParams]
    runs: dict[str, RunParams]
    plugins: tuple[str, ...] = ()  # modules imported first: they register modalities, sources, encoders, objectives
    seed: int = 0
    seeds: tuple[int, ...] | None = None  # pretraining seeds per run (default: [seed]); leaderboard shows mean ± 95% CI
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvaluationParams = field(default_factory=EvaluationParams)
    baselines: BaselineParams = field(default_factory=BaselineParams)
    tracking: TrackingParams = field(default_factory=TrackingParams)
    ray: RayParams = field(default_factory=RayParams)

    def run(self, name: str) -> RunParams:
        if name not in self.runs:
            raise UserError(f"unknown run {name!r}; runs in params: {', '.join(sorted(self.runs)) or '(none)'}")
        return self.runs[name]

    def seeds_for(self, run: str) -> tuple[int, ...]:
        seeds = self.run(run).seeds if self.run(run).seeds is not None else self.seeds
        seeds = (self.seed,) if seeds is None else seeds
        if not seeds or len(set(seeds)) != len(seeds):
            raise UserError(f"runs.{run}: seeds must be a non-empty list of distinct ints, got {list(seeds)}")
        return tuple(seeds)

    def dataset(self, name: str) -> DatasetParams:
        if name not in self.datasets:
            raise UserError(f"unknown dataset {name!r}; datasets in params: {', '.join(sorted(self.datasets))}")
        return self.datasets[name]

    def baselines_for(self, dataset: str) -> tuple[str, ...]:
        """The baselines ``dataset`` gets: ``datasets.<name>.baselines``, else ``baselines.include``."""
        own = self.dataset(dataset).baselines
        return self.baselines.include if own is None else own

    def describe_baselines(self, dataset: str) -> str:
        """One line saying which baselines ``dataset`` gets, where that is set, and what the supervised one costs."""
        kinds = self.baselines_for(dataset)
        where = f"datasets.{dataset}.baselines" if self.dataset(dataset).baselines is not None else "baselines.include"
        parts = [f"supervised ({self.baselines.supervised_epochs} epochs)" if k == "supervised" else k for k in kinds]
        line = f"{dataset}: {', '.join(parts) or 'none'} (from {where})"
        if "supervised" not in kinds:
            line += f"; add the supervised ceiling with datasets.{dataset}.baselines: [{', '.join([*kinds, 'supervised'])}]"
        return line

    def train_for(self, run: str) -> TrainConfig:
        """The run's typed train settings (built once, by ``parse_params``)."""
        cfg = self.run(run).train_config
        assert cfg is not None, "RunParams are typed by parse_params"
        return cfg


BASELINE_KINDS = ("raw_pixels", "supervised")


def _check_tokenizer_patch(name: str, run: RunParams, tok: Any) -> None:
    patch = run.encoder_kwargs.get("patch_size")
    if patch is not None and patch != tok.patch_size and "tokenizer" not in run.objective_kwargs:
        raise UserError(f"runs.{name}: encoder patch_size {patch} differs from datasets.{run.dataset}.tokenizer."
                        f"patch_size {tok.patch_size}; the visual tokens must be of the encoder's patches")


def load_params(path: Path) -> Params:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"params file {path} does not exist")
    raw = load_yaml(path.read_text(), str(path)) or {}
    try:
        return parse_params(raw, path.resolve().parent)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def parse_params(raw: dict[str, Any], root: Path | None = None) -> Params:
    """Typed params from a params.yaml mapping; ``root``: the params file's folder (where plugins may live)."""
    from ssl_tasks.data.ingest import SOURCES  # every built-in source registered

    if not isinstance(raw, dict):
        raise UserError("expected a mapping at the top level")
    raw = dict(raw)
    if raw.get("plugins"):
        load_plugins(raw["plugins"], root)
    for key in ("datasets", "runs"):
        if not isinstance(raw.get(key), dict) or not raw[key]:
            raise UserError(f"'{key}' must be a non-empty mapping")
    raw["datasets"] = {k: build(DatasetParams, v, f"datasets.{k}") for k, v in raw["datasets"].items()}
    raw["runs"] = {k: build(RunParams, v, f"runs.{k}") for k, v in raw["runs"].items()}
    params = build(Params, raw, "")
    for name, ds in params.datasets.items():
        SOURCES.get(ds.source)
        object.__setattr__(ds, "tokenizer_config", ds.tokenizer_params(f"datasets.{name}"))
    for name, run in params.runs.items():
        ds = params.dataset(run.dataset)
        obj = OBJECTIVES.get(run.objective)
        try:
            check_compatible(obj, ENCODERS.get(run.encoder), ds.modality)
        except UserError as e:
            raise UserError(f"runs.{name}: objective {run.objective!r} with encoder {run.encoder!r} on "
                            f"{ds.modality} dataset {run.dataset!r}: {e}") from None
        kwargs = run.objective_kwargs
        if obj.needs_tokenizer:
            _check_tokenizer_patch(name, run, ds.tokenizer_params())
            kwargs = {"tokenizer": f"artifacts/tokenizers/{run.dataset}/tokenizer.pt", **kwargs}
        # RunParams is frozen: its typed parts are set here, once, before anyone reads them
        object.__setattr__(run, "objective_config", objective_config(run.objective, kwargs,
                                                                     f"runs.{name}.objective_kwargs"))
        object.__setattr__(run, "train_config", build(TrainConfig, {**asdict(params.train), **run.train},
                                                      f"runs.{name}.train"))
        params.seeds_for(name)
    for p in params.evaluation.protocols:
        PROTOCOLS.get(p)
    ENCODERS.get(params.baselines.encoder)
    if getattr(ENCODERS.get(params.baselines.text_encoder), "modality", "image") != "text":
        raise UserError(f"baselines.text_encoder: {params.baselines.text_encoder!r} is not a text encoder")
    lists = {"baselines.include": params.baselines.include}
    lists.update({f"datasets.{n}.baselines": d.baselines for n, d in params.datasets.items() if d.baselines is not None})
    for where, kinds in lists.items():
        for b in kinds:
            if b == "random_init":
                raise UserError(f"{where}: random_init is no dataset baseline any more: every run is evaluated "
                                "next to random init of its own encoder; remove it")
            if b not in BASELINE_KINDS:
                raise UserError(f"{where}: unknown baseline {b!r}; valid: {', '.join(BASELINE_KINDS)}")
        if len(set(kinds)) != len(kinds):
            raise UserError(f"{where}: lists a baseline twice: {list(kinds)}")
    return params
