"""What the training loop eats on a graph: the whole graph, every step (full-batch training).

One epoch is one optimisation step on the whole graph, whatever the batch size (``steps_per_epoch`` is 1;
``count()`` is the number of nodes), and ``epoch`` yields ``(features (N, F) float32, edge_index (2, E) int64)``
once. With several Ray workers every worker gets the same graph; the loop seeds each rank's generator
differently, so each computes the same full-batch loss under a different corruption / mask / edge-drop draw,
and DistributedDataParallel averages their gradients (a larger Monte-Carlo sample of the same objective, not a
data split). Training reads no labels: only ``features.npy`` and ``edge_index.npy``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ssl_tasks.core.encoders import ENCODERS
from ssl_tasks.modalities.graph.shards import GraphDataset

NAME = "graph"


@dataclass(frozen=True)
class GraphDataSpec:
    """What a graph objective needs to know: node count and feature width."""

    num_nodes: int
    num_features: int


def node_inputs(ds: GraphDataset) -> tuple[np.ndarray, np.ndarray]:
    """Row-normalised float32 features and the int64 edge index, as every run and evaluation sees them."""
    from ssl_tasks.modalities.graph.encoders import normalise_features

    x = normalise_features(torch.from_numpy(np.ascontiguousarray(ds.features(), dtype=np.float32))).numpy()
    return np.ascontiguousarray(x), np.ascontiguousarray(ds.edge_index(), dtype=np.int64)


@dataclass
class GraphFeed:
    features: np.ndarray
    edge_index: np.ndarray
    spec: GraphDataSpec
    modality: str = NAME

    def count(self) -> int:
        return self.spec.num_nodes

    def steps_per_epoch(self, batch_size: int, world_size: int) -> int:
        return 1  # full-batch: every rank takes one step on the whole graph

    def build_encoder(self, name: str, kwargs: dict[str, Any]) -> nn.Module:
        return ENCODERS.get(name)(self.spec.num_features, **kwargs)

    def epoch(self, *, batch_size: int, seed: int, epoch: int, rank: int,
              world_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        yield self.features, self.edge_index


def graph_feed(job: Any) -> GraphFeed:
    ds = GraphDataset(Path(job.data_dir))
    x, ei = node_inputs(ds)
    return GraphFeed(x, ei, GraphDataSpec(int(x.shape[0]), int(x.shape[1])))


__all__ = ["GraphDataSpec", "GraphFeed", "graph_feed", "node_inputs"]
