"""The graph validation suite: per-node, per-edge and per-split tables (numpy/pandas) and the GX checks on them.

Tables: ``samples`` (one row per node: its split, label, degree, non-finite feature count, how many splits hold
it), ``edges`` (one row per stored directed edge: endpoints, self-loop, duplicate), ``node_splits`` (one row per
split: nodes, labelled share) and the shared ``class_counts``. Each failed expectation names its offending rows
(``node/…``, ``edge/…``, a split name) in the report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ssl_tasks.modalities.graph.shards import GraphDataset
from ssl_tasks.validation.gx_suite import SAMPLES, Check, ValidationConfig, duplicate_check, fmt
from ssl_tasks.validation.tables import DatasetTables, class_counts_table

EDGES = "edges"
NODE_SPLITS = "node_splits"


@dataclass(frozen=True)
class GraphTables(DatasetTables):
    edges: pd.DataFrame = None  # type: ignore[assignment]
    node_splits: pd.DataFrame = None  # type: ignore[assignment]

    def extra_frames(self) -> dict[str, pd.DataFrame]:
        return {EDGES: self.edges, NODE_SPLITS: self.node_splits}

    def report_fields(self, splits: list[str]) -> tuple[dict, dict]:
        e, s = self.edges, self.samples
        stats = {"num_nodes": int(len(s)), "num_edges": int(len(e)), "self_loops": int(e["self_loop"].sum()),
                 "duplicate_edges": int(e["duplicate"].sum()), "dangling_edges": int((~e["in_range"]).sum()),
                 "isolated_fraction": float(s["isolated"].mean()) if len(s) else 0.0}
        return {"graph": stats}, {f"graph_{k}": v for k, v in stats.items()}


def build_graph_tables(ds: GraphDataset) -> GraphTables:
    feats, ei, labels = ds.features(), ds.edge_index(), ds.labels()
    n = len(labels)
    width = max(4, len(str(max(n - 1, 0))))
    src, dst = (ei[0], ei[1]) if ei.ndim == 2 and len(ei) == 2 else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    in_range = (src >= 0) & (src < n) & (dst >= 0) & (dst < n)
    key = src.astype(np.int64) * max(n, 1) + dst
    dup = pd.Series(key).duplicated().to_numpy()  # every repeat of an earlier (source, target) pair
    ok_src, ok_dst = src[in_range], dst[in_range]
    degree = np.bincount(ok_src, minlength=n)[:n] + np.bincount(ok_dst, minlength=n)[:n]
    split_of = np.array(["none"] * n, dtype=object)
    n_splits = np.zeros(n, dtype=np.int64)
    split_rows = []
    for split in ds.splits():
        idx = ds.nodes(split)
        ok = idx[(idx >= 0) & (idx < n)]
        n_splits[ok] += 1
        split_of[ok] = split
        lab = labels[ok]
        split_rows.append({"id": split, "split": split, "count": int(len(idx)), "out_of_range": int(len(idx) - len(ok)),
                           "labeled_fraction": float((lab >= 0).mean()) if len(lab) else 1.0})
    nonfinite = (~np.isfinite(feats)).sum(axis=1) if feats.ndim == 2 and len(feats) == n else np.zeros(n, np.int64)
    samples = pd.DataFrame({
        "id": [f"node/{i:0{width}d}" for i in range(n)], "split": split_of, "label": labels.astype(np.int64),
        "degree": degree.astype(np.int64), "isolated": (degree == 0).astype(np.int64),
        "n_nonfinite": np.asarray(nonfinite, dtype=np.int64), "n_splits": n_splits,
        # nodes are one graph: a test node's features are seen (unlabelled) in pretraining by design
        "in_train": np.zeros(n, dtype=bool),
    })
    edges = pd.DataFrame({"id": [f"edge/{i}" for i in range(len(src))], "source": src.astype(np.int64),
                          "target": dst.astype(np.int64), "in_range": in_range, "self_loop": src == dst,
                          "duplicate": dup})
    node_splits = pd.DataFrame(split_rows, columns=["id", "split", "count", "out_of_range", "labeled_fraction"])
    return GraphTables(samples=samples, class_counts=class_counts_table(ds, samples), manifest=ds.manifest,
                       edges=edges, node_splits=node_splits)


def _at_most(table: str, column: str, allowed: int, n: int, what: str) -> Check:
    """``column == False`` on all but ``allowed`` of the table's ``n`` rows."""
    import great_expectations.expectations as gxe

    kwargs = {"mostly": max(0.0, (n - allowed - 0.5) / n)} if allowed > 0 and n > 0 else {}
    return Check(table, column, f"{column} == False: at most {allowed} {what}",
                 gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[False], **kwargs))


def graph_suite(tables: GraphTables, config: ValidationConfig) -> list[Check]:
    import great_expectations.expectations as gxe

    m = tables.manifest
    n, k = int(m["num_nodes"]), len(m.get("label_names", []))
    checks = [
        Check(SAMPLES, None, f"node rows == manifest num_nodes {n}", gxe.ExpectTableRowCountToEqual(value=n)),
        Check(EDGES, None, f"edge rows == manifest num_edges {m['num_edges']}",
              gxe.ExpectTableRowCountToEqual(value=int(m["num_edges"]))),
        Check(EDGES, "source", f"source node id in 0..{n - 1} (no dangling edge)",
              gxe.ExpectColumnValuesToBeBetween(column="source", min_value=0, max_value=n - 1)),
        Check(EDGES, "target", f"target node id in 0..{n - 1} (no dangling edge)",
              gxe.ExpectColumnValuesToBeBetween(column="target", min_value=0, max_value=n - 1)),
        _at_most(EDGES, "duplicate", int(config.max_duplicate_edges), len(tables.edges), "duplicate directed edges"),
        _at_most(EDGES, "self_loop", int(config.max_self_loops), len(tables.edges), "self-loops"),
        Check(SAMPLES, "isolated", f"share of isolated nodes <= {fmt(config.max_isolated_fraction)}",
              gxe.ExpectColumnMeanToBeBetween(column="isolated", min_value=0, max_value=config.max_isolated_fraction)),
        Check(SAMPLES, "n_nonfinite", "every feature finite",
              gxe.ExpectColumnValuesToBeBetween(column="n_nonfinite", min_value=0, max_value=0)),
        Check(SAMPLES, "n_splits", "node splits disjoint (each node in at most one)",
              gxe.ExpectColumnValuesToBeBetween(column="n_splits", min_value=0, max_value=1)),
        Check(NODE_SPLITS, "out_of_range", "split node ids in range",
              gxe.ExpectColumnValuesToBeBetween(column="out_of_range", min_value=0, max_value=0)),
        Check(SAMPLES, "label", f"label in {{-1, 0..{k - 1}}}",
              gxe.ExpectColumnValuesToBeInSet(column="label", value_set=[-1, *range(k)])),
    ]
    if k:
        checks.append(Check(NODE_SPLITS, "labeled_fraction", "every node of a split is labelled",
                            gxe.ExpectColumnValuesToBeBetween(column="labeled_fraction", min_value=1.0,
                                                              max_value=1.0)))
        if not tables.class_counts.empty:
            flo, fhi = config.min_class_fraction / k, config.max_class_fraction / k
            checks.append(Check("class_counts", "fraction", f"class fraction of split in [{flo:.4g}, {fhi:.4g}]",
                                gxe.ExpectColumnValuesToBeBetween(column="fraction", min_value=flo, max_value=fhi)))
    checks.append(duplicate_check(SAMPLES, "in_train", len(tables.samples), config, "non-train nodes duplicate"))
    return checks


__all__ = ["EDGES", "NODE_SPLITS", "GraphTables", "build_graph_tables", "graph_suite"]
