"""The graph dataset format, ``ssl-tasks-graph/v1``: one graph per dataset.

Layout (every array a plain ``.npy``, no pickles)::

    features.npy     (N, F) float32 node features
    edge_index.npy   (2, E) int64 directed edges (an undirected edge is stored both ways)
    nodes.labels.npy (N,) int64, -1 for an unlabelled node
    split_<name>.npy sorted int64 node ids of each split (train, val, test; a node may be in none)
    manifest.json    counts, label names, the sha256 and size of every file, the source's description

Written atomically (``core.io.atomic_dir``); ``np.save`` and the sorted-key JSON manifest are deterministic, so
re-ingesting the same input gives byte-identical files. ``GraphDataset.verify`` re-checks the digests.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from ssl_tasks.core.errors import UserError
from ssl_tasks.core.io import atomic_dir, read_manifest, write_json_atomic
from ssl_tasks.data.shards import ManifestDataset, save_columns

FORMAT = "ssl-tasks-graph/v1"
NAME = "graph"
ARRAYS = ("features", "edge_index", "labels")


def _digest(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def write_graph_dataset(out: Path, result: Any, source: dict[str, Any]) -> dict[str, Any]:
    """Write a ``sources.GraphSourceResult`` as a graph dataset at ``out``; return the manifest."""
    feats = np.ascontiguousarray(result.features, dtype=np.float32)
    ei = np.ascontiguousarray(result.edge_index, dtype=np.int64)
    labels = np.ascontiguousarray(result.labels, dtype=np.int64)
    n = len(feats)
    if feats.ndim != 2 or labels.shape != (n,) or ei.ndim != 2 or ei.shape[0] != 2:
        raise UserError(f"graph source returned features {feats.shape}, labels {labels.shape}, edges {ei.shape}; "
                        "expected (N, F), (N,) and (2, E)")
    if n == 0:
        raise UserError("the graph has no nodes")
    with atomic_dir(out) as tmp:
        save_columns(tmp, "", {"features": feats, "edge_index": ei})
        save_columns(tmp, "nodes", {"labels": labels})
        splits, members = {}, {}
        for name, split in sorted(result.splits.items()):
            idx = members[f"split_{name}"] = np.sort(np.asarray(split.index, dtype=np.int64))
            lab = labels[idx[(idx >= 0) & (idx < n)]]
            splits[name] = {"count": int(len(idx)), "labeled": int((lab >= 0).sum())}
        save_columns(tmp, "", members)
        files = {p.name: _digest(p) for p in sorted(tmp.glob("*.npy"))}
        manifest = {"format": FORMAT, "modality": NAME, "num_nodes": int(n), "num_features": int(feats.shape[1]),
                    "num_edges": int(ei.shape[1]), "undirected": bool(getattr(result, "undirected", True)),
                    "labeled_nodes": int((labels >= 0).sum()), "label_names": list(result.label_names),
                    "splits": splits, "files": files, "source": source}
        write_json_atomic(tmp / "manifest.json", manifest)
    return manifest


class GraphDataset(ManifestDataset):
    """An ingested graph: the whole graph (``features``, ``edge_index``, ``labels``) and its node splits (label
    names, splits and counts from ``ManifestDataset``; its own ``verify`` of the graph's files)."""

    modality = NAME

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        if self.manifest.get("format") != FORMAT:
            raise UserError(f"{self.root}: format {self.manifest.get('format')!r} is not {FORMAT}")

    @property
    def num_nodes(self) -> int:
        return int(self.manifest["num_nodes"])

    def _array(self, name: str) -> np.ndarray:
        try:
            return np.load(self.root / name, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"{self.root / name}: unreadable ({e}); re-ingest the dataset") from None

    def features(self) -> np.ndarray:
        return self._array("features.npy")

    def edge_index(self) -> np.ndarray:
        return self._array("edge_index.npy")

    def labels(self) -> np.ndarray:
        return self._array("nodes.labels.npy")

    def nodes(self, split: str) -> np.ndarray:
        if split not in self.manifest["splits"]:
            raise UserError(f"{self.root}: no split {split!r}; splits: {', '.join(self.splits())}")
        return self._array(f"split_{split}.npy")

    def load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The raw features and labels of ``split``'s nodes (graph-free; the node probes use ``nodes``)."""
        idx = self.nodes(split)
        return self.features()[idx], self.labels()[idx]

    def verify(self) -> None:
        """Every file's size and sha256 against the manifest (``UserError`` naming the first that differs)."""
        for name, want in sorted(self.manifest.get("files", {}).items()):
            p = self.root / name
            if not p.is_file():
                raise UserError(f"{p} is missing")
            got = _digest(p)
            if got != want:
                raise UserError(f"{p}: sha256 {got['sha256'][:12]}… ({got['bytes']} bytes) differs from the manifest's "
                                f"{want['sha256'][:12]}… ({want['bytes']} bytes)")


__all__ = ["FORMAT", "GraphDataset", "write_graph_dataset"]
