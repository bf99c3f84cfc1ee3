"""The graph modality plug-in: one node-attributed graph per dataset (``ssl-tasks-graph/v1``), full-batch
training of graph encoders (``gcn``, ``gat``) with DGI, GraphCL and GraphMAE, node-level linear and k-NN probes
on the train / val / test node splits, and the random-init (per run), raw-features and supervised-GNN baselines.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import nn

from ssl_tasks.core.encoders import ENCODERS
from ssl_tasks.core.errors import UserError
from ssl_tasks.core.modality import MODALITIES, BaselineResult, BaselineSpec, EvalContext, Modality, applicable
from ssl_tasks.modalities.graph import encoders as _encoders  # noqa: F401  (registers gcn, gat; PyG loads lazily)
from ssl_tasks.modalities.graph import shards
from ssl_tasks.modalities.graph import sources as _sources  # noqa: F401  (registers planetoid, edge_list)

ROW_NAMES = {"raw_pixels": "raw_features", "supervised": "supervised_gnn"}
DEFAULT_BASELINE_ENCODER = ("gcn", {"hidden": 512})


def _splits(ds: shards.GraphDataset) -> dict[str, np.ndarray]:
    if not {"train", "test"} <= set(ds.splits()):
        raise UserError(f"{ds.root}: node probes need train and test node splits; has {', '.join(ds.splits())}")
    return {s: ds.nodes(s) for s in ds.splits()}


@MODALITIES.register("graph")
class GraphModality(Modality):
    name: ClassVar[str] = "graph"
    formats: ClassVar[tuple[str, ...]] = (shards.FORMAT,)
    trains: ClassVar[tuple[str, ...]] = ("graph",)
    protocol_kinds: ClassVar[frozenset[str]] = frozenset({"frozen"})

    def write_dataset(self, out: Path, result: Any, source: dict[str, Any], shard_size: int) -> dict[str, Any]:
        return shards.write_graph_dataset(out, result, source)

    def open(self, root: Path) -> shards.GraphDataset:
        return shards.GraphDataset(Path(root))

    def validation_suite(self, ds: Any, config: Any) -> tuple[Any, list[Any]]:
        from ssl_tasks.modalities.graph.checks import build_graph_tables, graph_suite

        tables = build_graph_tables(ds)
        return tables, graph_suite(tables, config)

    # ------------------------------------------------------------------ pretraining

    def encoder_meta(self, ds: Any, tokenizer_file: Path | None) -> dict[str, Any]:
        return {"num_features": int(ds.manifest["num_features"]), "num_nodes": int(ds.manifest["num_nodes"])}

    def build_encoder(self, name: str, kwargs: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
        return ENCODERS.get(name)(int(meta["num_features"]), **kwargs)

    def feed(self, job: Any) -> Any:
        from ssl_tasks.modalities.graph.feed import graph_feed

        return graph_feed(job)

    # ------------------------------------------------------------------ evaluation

    def _probes(self, ctx: EvalContext, encoder: nn.Module | None, ds: shards.GraphDataset,
                label: str) -> dict[str, float]:
        from ssl_tasks.modalities.graph.feed import node_inputs
        from ssl_tasks.modalities.graph.probes import node_embeddings, node_protocols

        wanted = applicable(ctx.protocols, self.protocol_kinds)
        if not wanted or not ds.num_classes:
            ctx.say(f"{label}: no frozen protocol or no labels: node probes skipped")
            return {}
        t0 = time.perf_counter()
        x, ei = node_inputs(ds)
        emb = x if encoder is None else node_embeddings(encoder, x, ei)
        metrics = node_protocols(emb, ds.labels(), _splits(ds), wanted, ds.num_classes, k=ctx.settings.k,
                                 temperature=ctx.settings.temperature)
        ctx.say(f"{label}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
                + f" ({time.perf_counter() - t0:.1f} s)")
        return metrics

    def evaluate(self, ctx: EvalContext, encoder: nn.Module, ds: Any, meta: dict[str, Any], pretrain_dir: Path,
                 label: str, trained: bool = True) -> tuple[dict[str, float], dict[str, np.ndarray], list[str]]:
        return self._probes(ctx, encoder, ds, label), {}, []

    def baselines(self, ds: Any, cfg: Any, protocols: Any) -> list[BaselineSpec]:
        if not ds.num_classes:
            return []
        name, kwargs = cfg.encoder, dict(cfg.encoder_kwargs)
        if name not in ENCODERS.names() or getattr(ENCODERS.get(name), "modality", None) != "graph":
            name, kwargs = DEFAULT_BASELINE_ENCODER[0], dict(DEFAULT_BASELINE_ENCODER[1])
        return [BaselineSpec(k, ROW_NAMES[k], name, kwargs) for k in cfg.include if k in ROW_NAMES]

    def run_baseline(self, ctx: EvalContext, spec: BaselineSpec, ds: Any, tokenizer_dir: Path, cfg: Any,
                     label: str) -> BaselineResult:
        from ssl_tasks.modalities.graph.feed import node_inputs
        from ssl_tasks.modalities.graph.probes import train_supervised_gnn

        if spec.kind == "raw_pixels":
            return BaselineResult(self._probes(ctx, None, ds, label), {}, None)
        import torch

        torch.manual_seed(ctx.seed)
        encoder = self.build_encoder(spec.encoder_name, spec.encoder_kwargs, self.encoder_meta(ds, None))
        x, ei = node_inputs(ds)
        splits = _splits(ds)
        ctx.say(f"{label}: supervised training of {spec.encoder_name} on {len(splits['train'])} labelled nodes for "
                f"{cfg.supervised_epochs} epochs")
        encoder, val = train_supervised_gnn(encoder, x, ei, ds.labels(), splits["train"],
                                            splits.get("val", splits["train"]), ds.num_classes,
                                            epochs=max(cfg.supervised_epochs, 1), lr=cfg.supervised_lr, seed=ctx.seed)
        ctx.say(f"{label}: best val accuracy {val:.4f}")
        return BaselineResult(self._probes(ctx, encoder, ds, label), {}, encoder)

    def describe(self) -> str:
        return "one node-attributed graph; GCN / GAT encoders trained full-batch; node linear probe and k-NN"
