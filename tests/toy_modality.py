"""A modality defined outside the library: fixed-length float vectors from a CSV.

It registers everything a modality needs (a source, a dataset format, a Great Expectations suite, an MLP
encoder, a noise-view contrastive objective, the feed, baselines and evaluation), and the pipeline runs it
end to end with no edit to ``ssl_tasks/pipeline/``: name this module in params.yaml's ``plugins`` list
(tests/pipeline/test_modality_contract.py does). docs/ADDING_A_MODALITY.md walks through it.

Never imported by the test process itself: its objective would join the objective contract test's registry.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from ssl_tasks.core.encoders import ENCODERS, Encoder
from ssl_tasks.core.errors import UserError
from ssl_tasks.core.io import atomic_dir, read_manifest, write_json_atomic
from ssl_tasks.core.modality import MODALITIES, BaselineResult, BaselineSpec, EvalContext, Modality
from ssl_tasks.data.sources import SOURCES, source_kind, stratified_split
from ssl_tasks.heads.mlp import mlp
from ssl_tasks.losses.nt_xent import NTXentLoss
from ssl_tasks.objectives.base import OBJECTIVES, Objective, StepResult

NAME = "vectors"
FORMAT = "ssl-tasks-vectors/v1"


# --------------------------------------------------------------------------- ingest: source and dataset format


@dataclass
class VectorSplit:
    values: np.ndarray  # (N, D) float32
    labels: np.ndarray  # (N,) int64, -1 unlabeled


@dataclass
class VectorSourceResult:
    splits: dict[str, VectorSplit]
    label_names: list[str]
    info: dict[str, Any]


@SOURCES.register("vectors_csv")
@source_kind(NAME)
def vectors_csv(path: Path | None, *, test_fraction: float, split_seed: int,
                label_column: str = "label") -> VectorSourceResult:
    """A CSV of numeric feature columns and an optional label column."""
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable CSV ({e})") from None
    if table.empty:
        raise UserError(f"{path} has no rows")
    features = table.drop(columns=[label_column], errors="ignore")
    if not all(pd.api.types.is_numeric_dtype(t) for t in features.dtypes):
        raise UserError(f"{path}: every column but {label_column!r} must be numeric")
    names: list[str] = []
    labels = np.full(len(table), -1, dtype=np.int64)
    if label_column in table:
        names = sorted(table[label_column].astype(str).unique())
        labels = table[label_column].astype(str).map({n: i for i, n in enumerate(names)}).to_numpy(np.int64)
    values = features.to_numpy(np.float32)
    train, test = stratified_split(labels, test_fraction, split_seed)
    return VectorSourceResult({"train": VectorSplit(values[train], labels[train]),
                               "test": VectorSplit(values[test], labels[test])}, names,
                              {"path": str(path), "columns": list(features.columns)})


class VectorDataset:
    """An ingested vector dataset: ``<split>/values.npy`` (memory-mapped) and ``<split>/labels.npy``."""

    modality = NAME

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        if self.manifest.get("format") != FORMAT:
            raise UserError(f"{self.root}: format {self.manifest.get('format')!r} is not {FORMAT}")

    @property
    def label_names(self) -> list[str]:
        return list(self.manifest["label_names"])

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def splits(self) -> list[str]:
        return list(self.manifest["splits"])

    def count(self, split: str) -> int:
        return int(self.manifest["splits"][split]["count"])

    def values(self, split: str) -> np.ndarray:
        return np.load(self.root / split / "values.npy", mmap_mode="r")

    def load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return np.ascontiguousarray(self.values(split)), np.load(self.root / split / "labels.npy")


def write_vectors(out: Path, result: VectorSourceResult, source: dict[str, Any]) -> dict[str, Any]:
    with atomic_dir(out) as tmp:
        splits = {}
        for split, data in result.splits.items():
            (tmp / split).mkdir()
            np.save(tmp / split / "values.npy", data.values)
            np.save(tmp / split / "labels.npy", data.labels)
            splits[split] = {"count": len(data.labels), "labeled": int((data.labels >= 0).sum())}
        dim = int(next(iter(result.splits.values())).values.shape[1])
        manifest = {"format": FORMAT, "modality": NAME, "dim": dim, "label_names": result.label_names,
                    "splits": splits, "source": source}
        write_json_atomic(tmp / "manifest.json", manifest)
    return manifest


# --------------------------------------------------------------------------- encoder and objective


@ENCODERS.register("vector_mlp")
class VectorMLP(Encoder):
    """(B, dim) float vectors -> (B, out_dim) features."""

    modality: ClassVar[str] = NAME

    def __init__(self, dim: int, width: int = 32, out_dim: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, out_dim))
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass(frozen=True)
class VectorSpec:
    dim: int


@dataclass(frozen=True)
class NoiseContrastConfig:
    noise: float = 0.3  # std of the Gaussian noise that makes a view
    temperature: float = 0.2
    proj_dim: int = 16


@OBJECTIVES.register("noise_contrast")
class NoiseContrast(Objective):
    """SimCLR's NT-Xent (arXiv:2002.05709) between two noisy copies of each vector."""

    Config = NoiseContrastConfig
    modalities: ClassVar[frozenset[str]] = frozenset({NAME})

    def __init__(self, encoder: nn.Module, cfg: NoiseContrastConfig, data: VectorSpec) -> None:
        super().__init__(encoder, cfg, data)
        self.projector = mlp(encoder.out_dim, 32, cfg.proj_dim)
        self.criterion = NTXentLoss(cfg.temperature)

    def make_views(self, x: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
        x = x.float()  # (B, D)
        return [x + self.cfg.noise * torch.randn(x.shape, generator=g) for _ in range(2)]

    def forward(self, views: list[torch.Tensor]) -> StepResult:
        h = self.encoder(torch.cat(views))  # (2B, D')
        z1, z2 = self.projector(h).chunk(2)  # (B, P) each
        loss = self.criterion(z1, z2)
        h1, h2 = h.detach().chunk(2)
        return StepResult(loss=loss, terms={"nt_xent_loss": loss.detach()}, embeddings=(h1, h2))


@dataclass
class VectorFeed:
    values: np.ndarray
    spec: VectorSpec
    modality: str = NAME

    def count(self) -> int:
        return len(self.values)

    def build_encoder(self, name: str, kwargs: dict[str, Any]) -> nn.Module:
        return ENCODERS.get(name)(self.spec.dim, **kwargs)

    def epoch(self, *, batch_size: int, seed: int, epoch: int, rank: int, world_size: int) -> Any:
        from ssl_tasks.training.feeds import stream_rows

        return stream_rows(self.values, batch_size=batch_size, seed=seed, epoch=epoch, rank=rank,
                           world_size=world_size)


# --------------------------------------------------------------------------- the plug-in


@MODALITIES.register(NAME)
class VectorModality(Modality):
    name: ClassVar[str] = NAME
    formats: ClassVar[tuple[str, ...]] = (FORMAT,)
    trains: ClassVar[tuple[str, ...]] = (NAME,)
    protocol_kinds: ClassVar[frozenset[str]] = frozenset({"frozen", "finetune"})

    def write_dataset(self, out: Path, result: Any, source: dict[str, Any], shard_size: int) -> dict[str, Any]:
        return write_vectors(out, result, source)

    def open(self, root: Path) -> VectorDataset:
        return VectorDataset(root)

    def validation_suite(self, ds: VectorDataset, config: Any) -> tuple[Any, list[Any]]:
        import great_expectations.expectations as gxe

        from ssl_tasks.validation.gx_suite import SAMPLES, Check, label_and_duplicate_checks, row_count_check
        from ssl_tasks.validation.tables import DatasetTables, class_counts_table

        rows = []
        for split in ds.splits():
            values, labels = ds.load(split)
            for i, (v, y) in enumerate(zip(values, labels)):
                rows.append({"id": f"{split}/{i}", "split": split, "label": int(y),
                             "n_nonfinite": int((~np.isfinite(v)).sum()),
                             "sha1": hashlib.sha1(v.tobytes()).hexdigest()})
        samples = pd.DataFrame(rows)
        train = samples["split"] == "train"
        samples["in_train"] = samples["sha1"].isin(set(samples.loc[train, "sha1"])) & ~train
        tables = DatasetTables(samples, class_counts_table(ds, samples), ds.manifest)
        finite = Check(SAMPLES, "n_nonfinite", "every value finite",
                       gxe.ExpectColumnValuesToBeBetween(column="n_nonfinite", min_value=0, max_value=0))
        return tables, [row_count_check(tables), finite, *label_and_duplicate_checks(tables, config, "vector")]

    def encoder_meta(self, ds: VectorDataset, tokenizer_file: Path | None) -> dict[str, Any]:
        return {"dim": int(ds.manifest["dim"])}

    def build_encoder(self, name: str, kwargs: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
        return ENCODERS.get(name)(meta["dim"], **kwargs)

    def feed(self, job: Any) -> VectorFeed:
        ds = VectorDataset(Path(job.data_dir))
        return VectorFeed(np.ascontiguousarray(ds.values("train")), VectorSpec(int(ds.manifest["dim"])))

    def evaluate(self, ctx: EvalContext, encoder: nn.Module, ds: VectorDataset, meta: dict[str, Any],
                 pretrain_dir: Path, label: str, trained: bool = True) -> tuple[dict[str, float], dict[str, np.ndarray],
                                                                               list[str]]:
        from ssl_tasks.evaluation.protocols import run_protocols

        metrics, subsets = run_protocols(ctx, encoder, ds.load("train"), ds.load("test"),
                                         num_classes=ds.num_classes, label=label)
        return metrics, subsets, []

    def baselines(self, ds: VectorDataset, cfg: Any, protocols: Any) -> list[BaselineSpec]:
        return [BaselineSpec("raw_pixels", "raw_input", "vector_mlp", {})]

    def run_baseline(self, ctx: EvalContext, spec: BaselineSpec, ds: VectorDataset, tokenizer_dir: Path, cfg: Any,
                     label: str) -> BaselineResult:
        from ssl_tasks.evaluation.protocols import run_protocols

        metrics, subsets = run_protocols(ctx, None, ds.load("train"), ds.load("test"), num_classes=ds.num_classes,
                                         label=label)  # encoder None: the raw values
        return BaselineResult(metrics, subsets, None)
