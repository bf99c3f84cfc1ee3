"""Graph sources: read a user's graph into one ``GraphSourceResult`` (node features, directed edge list,
labels, named node splits), for ``shards.write_graph_dataset``.

* ``planetoid``: the Planetoid citation graphs (Cora; Yang et al. 2016, the GCN "public split": 140 train,
  500 val, 1000 test nodes). Reads ``<name>_planetoid_dense.npz`` (``allow_pickle=False``) by default, or with
  ``files: pickle`` the original ``ind.<name>.*`` Python-2 pickles through :class:`GraphUnpickler`, which
  rebuilds only numpy arrays, a scipy CSR matrix and a ``defaultdict`` of lists and refuses every other global
  (so a malicious payload never runs). Both give the same arrays (the Kipf & Welling loader's recipe).
* ``edge_list``: a nodes table (id, optional label, numeric feature columns) and an edges table (source, target),
  CSV or TSV; undirected by default (each edge stored both ways); a seeded stratified train/val/test split of the
  nodes, or an explicit split column.

Sources never write and describe their input deterministically (paths as given, sha256 of the files read), so
two ingests of the same input are byte-identical.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ssl_tasks.core.errors import UserError
from ssl_tasks.data.sources import SOURCES, source_kind

NAME = "graph"


@dataclass
class NodeSplit:
    """The nodes of one split (sorted int64 ids) and their labels (what ingest's label check reads)."""

    index: np.ndarray
    labels: np.ndarray


@dataclass
class GraphSourceResult:
    """One graph: features (N, F) float32, edge_index (2, E) int64 (directed; an undirected edge appears both ways),
    labels (N,) int64 (-1: unlabelled), node splits as sorted int64 index arrays, class names, provenance."""

    features: np.ndarray
    edge_index: np.ndarray
    labels: np.ndarray
    splits: dict[str, NodeSplit]
    label_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    undirected: bool = True


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- planetoid


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """What a Planetoid ``ind.*`` pickle references (README of the data): array reconstruction, a CSR matrix, the
    ``defaultdict(list)`` adjacency. Nothing that executes code or touches the file system."""
    import collections

    import scipy.sparse as sp

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("scipy.sparse.csr", "csr_matrix"): sp.csr_matrix,
        ("scipy.sparse._csr", "csr_matrix"): sp.csr_matrix,
        ("collections", "defaultdict"): collections.defaultdict,
        ("__builtin__", "list"): list,
        ("builtins", "list"): list,
    }


class GraphUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays, CSR matrices and lists; any other global raises before it is called."""

    def __init__(self, file: io.BufferedIOBase, *, name: str) -> None:
        super().__init__(file, encoding="latin1")
        self._name = name
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UserError(f"{self._name}: refused to load a pickle global '{module}.{name}' (Planetoid files only "
                            "hold numpy arrays, a CSR matrix and a dict of lists; the file may be malicious)") from None


def load_graph_pickle(path: Path) -> Any:
    """Unpickle ``path`` with :class:`GraphUnpickler`; any failure is a ``UserError`` naming the file."""
    try:
        return GraphUnpickler(io.BytesIO(path.read_bytes()), name=str(path)).load()
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure on untrusted bytes is the file's fault
        raise UserError(f"{path}: not a readable Planetoid pickle ({type(e).__name__}: {e})") from None


def _dense(obj: Any, path: Path, rows: int | None = None) -> np.ndarray:
    import scipy.sparse as sp

    if isinstance(obj, sp.csr_matrix):
        try:  # rebuilt from its raw arrays, so a crafted matrix cannot carry inconsistent internals
            m = sp.csr_matrix((np.asarray(obj.data), np.asarray(obj.indices), np.asarray(obj.indptr)),
                              shape=obj.shape)
            m.check_format(full_check=True)
        except Exception as e:  # noqa: BLE001
            raise UserError(f"{path}: malformed sparse matrix ({e})") from None
        obj = m.toarray()
    if not isinstance(obj, np.ndarray) or obj.ndim != 2 or (rows is not None and len(obj) != rows):
        raise UserError(f"{path}: expected a 2-d array{'' if rows is None else f' of {rows} rows'}, "
                        f"got {type(obj).__name__} {getattr(obj, 'shape', '')}")
    return obj


def _planetoid_pickles(folder: Path, name: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The Kipf & Welling GCN loader's recipe over ``ind.<name>.*`` (test rows reordered, duplicates dropped)."""
    files = {k: folder / f"ind.{name}.{k}" for k in ("x", "y", "allx", "ally", "tx", "ty", "graph", "test.index")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise UserError(f"planetoid: missing {', '.join(missing)}")
    obj = {k: load_graph_pickle(p) for k, p in files.items() if k != "test.index"}
    try:
        test_idx = np.array([int(line) for line in files["test.index"].read_text().split()], dtype=np.int64)
    except ValueError as e:
        raise UserError(f"{files['test.index']}: not one integer per line ({e})") from None
    allx, tx = _dense(obj["allx"], files["allx"]), _dense(obj["tx"], files["tx"])
    ally, ty = _dense(obj["ally"], files["ally"], len(allx)), _dense(obj["ty"], files["ty"], len(tx))
    n = len(allx) + len(tx)
    if len(test_idx) != len(tx) or len(set(test_idx.tolist())) != len(test_idx) or \
            (len(test_idx) and (test_idx.min() < len(allx) or test_idx.max() >= n)):
        raise UserError(f"{files['test.index']}: expected {len(tx)} distinct ids in {len(allx)}..{n - 1}")
    test_sorted = np.sort(test_idx)
    feats = np.vstack([allx, tx])
    feats[test_idx] = feats[test_sorted]
    onehot = np.vstack([ally, ty])
    onehot[test_idx] = onehot[test_sorted]
    graph = obj["graph"]
    if not isinstance(graph, dict):
        raise UserError(f"{files['graph']}: expected a dict of neighbour lists, got {type(graph).__name__}")
    pairs = set()
    for u, nbrs in graph.items():
        for v in nbrs:
            u_, v_ = int(u), int(v)
            if u_ != v_:
                pairs.add((min(u_, v_), max(u_, v_)))
    und = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2).T
    n_train = len(_dense(obj["y"], files["y"]))  # Planetoid: x/y are the first labelled rows; val the next 500
    arrays = {"features": feats, "labels": onehot.argmax(1).astype(np.int64), "edge_index_undirected": und,
              "idx_train": np.arange(n_train, dtype=np.int64),
              "idx_val": np.arange(n_train, min(n_train + 500, len(allx)), dtype=np.int64), "idx_test": test_sorted}
    return arrays, {f"ind.{name}.{k}": _sha256(p) for k, p in files.items()}


def _node_split(idx: np.ndarray, labels: np.ndarray, n: int, where: str) -> NodeSplit:
    idx = np.sort(idx.astype(np.int64))
    if len(idx) and (idx[0] < 0 or idx[-1] >= n):
        raise UserError(f"{where}: split node ids span {idx[0]}..{idx[-1]}, outside 0..{n - 1}")
    return NodeSplit(idx, labels[idx])


def _planetoid_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"{path}: not a readable .npz without pickles ({e})") from None
    need = {"features", "labels", "edge_index_undirected", "idx_train", "idx_val", "idx_test"}
    if not need <= set(arrays):
        raise UserError(f"{path}: missing arrays {sorted(need - set(arrays))}")
    return arrays


@SOURCES.register("planetoid")
@source_kind(NAME)
def planetoid(path: Path | None, *, test_fraction: float, split_seed: int, name: str = "cora",
              files: str = "npz") -> GraphSourceResult:
    """A Planetoid graph (``name``: cora) from ``path`` (its folder, or the .npz itself) with the public split.

    ``test_fraction`` and ``split_seed`` are unused: the split is the published one.
    """
    if path is None:
        raise UserError("planetoid needs a path: the folder holding the Planetoid files")
    path = Path(path)
    if files == "npz":
        npz = path if path.suffix == ".npz" else path / f"{name}_planetoid_dense.npz"
        if not npz.is_file():
            raise UserError(f"planetoid: {npz} does not exist")
        a = _planetoid_npz(npz)
        digests = {npz.name: _sha256(npz)}
    elif files == "pickle":
        a, digests = _planetoid_pickles(path if path.is_dir() else path.parent, name)
    else:
        raise UserError(f"planetoid: files must be 'npz' or 'pickle', got {files!r}")
    feats = np.asarray(a["features"])
    labels = np.asarray(a["labels"]).astype(np.int64)
    n = len(feats)
    if feats.ndim != 2 or labels.shape != (n,):
        raise UserError(f"planetoid: features {feats.shape} and labels {labels.shape} disagree")
    und = np.asarray(a["edge_index_undirected"]).astype(np.int64).reshape(2, -1)
    edge_index = np.concatenate([und, und[::-1]], axis=1)  # both directions
    splits = {s: _node_split(np.asarray(a[f"idx_{s}"]), labels, n, str(path)) for s in ("train", "val", "test")}
    k = int(labels.max()) + 1 if n else 0
    return GraphSourceResult(features=feats.astype(np.float32), edge_index=edge_index, labels=labels, splits=splits,
                             label_names=[str(i) for i in range(k)],
                             info={"path": str(path), "planetoid": name, "files": files, "sha256": digests})


# --------------------------------------------------------------------------- edge list


def _read_table(path: Path, what: str) -> Any:
    import pandas as pd

    if not path.is_file():
        raise UserError(f"edge_list: {what} table {path} does not exist")
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        return pd.read_csv(path, sep=sep)
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: the {what} table is empty") from None
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise UserError(f"{path}: not a readable {what} table ({e})") from None


def _split_nodes(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """A seeded, per-class (stratified) random train/val/test split of the labelled nodes (unlabelled: in none)."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in np.unique(labels[labels >= 0]):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_te, n_va = int(round(test_fraction * len(idx))), int(round(val_fraction * len(idx)))
        out["test"].append(idx[:n_te])
        out["val"].append(idx[n_te:n_te + n_va])
        out["train"].append(idx[n_te + n_va:])
    return {s: np.sort(np.concatenate(v)).astype(np.int64) if v else np.zeros(0, np.int64) for s, v in out.items()}


@SOURCES.register("edge_list")
@source_kind(NAME)
def edge_list(path: Path | None, *, test_fraction: float, split_seed: int, nodes: str = "nodes.csv",
              edges: str = "edges.csv", id_column: str = "id", label_column: str = "label",
              split_column: str | None = None, source_column: str = "source", target_column: str = "target",
              undirected: bool = True, val_fraction: float = 0.1) -> GraphSourceResult:
    """A nodes table and an edges table in the folder ``path``.

    Every nodes column but the id, label and split columns is a numeric feature. Labels are class names (sorted);
    an empty label is unlabelled (-1). Edges must name known node ids. Without ``split_column`` the nodes are split
    per class at random (``split_seed``): ``test_fraction`` to test, ``val_fraction`` to val, the rest to train;
    with it, each node's split is that column's value (train, val, test, or empty for none).
    """
    import pandas as pd

    if path is None:
        raise UserError("edge_list needs a path: the folder holding the nodes and edges tables")
    folder = Path(path)
    npath, epath = folder / nodes, folder / edges
    nt, et = _read_table(npath, "nodes"), _read_table(epath, "edges")
    if nt.empty:
        raise UserError(f"{npath}: the nodes table has no rows")
    if et.empty:
        raise UserError(f"{epath}: the edges table has no rows (a graph without edges is not a graph dataset)")
    for col, table, p in ((id_column, nt, npath), (source_column, et, epath), (target_column, et, epath)):
        if col not in table:
            raise UserError(f"{p}: no column {col!r} (columns: {', '.join(map(str, table.columns))})")
    ids = nt[id_column].astype(str)
    if ids.duplicated().any():
        raise UserError(f"{npath}: node ids repeat, e.g. {ids[ids.duplicated()].iloc[0]!r}")
    index = pd.Index(ids)
    src, dst = index.get_indexer(et[source_column].astype(str)), index.get_indexer(et[target_column].astype(str))
    bad = (src < 0) | (dst < 0)
    if bad.any():
        rows = np.flatnonzero(bad)[:5]
        named = ", ".join(f"row {r + 2}: {et[source_column].iloc[r]!r} -> {et[target_column].iloc[r]!r}" for r in rows)
        raise UserError(f"{epath}: {int(bad.sum())} edges name node ids absent from {npath.name} ({named})")
    drop = [c for c in (id_column, label_column, split_column) if c and c in nt]
    feats = nt.drop(columns=drop)
    non_numeric = [str(c) for c, t in feats.dtypes.items() if not pd.api.types.is_numeric_dtype(t)]
    if non_numeric:
        raise UserError(f"{npath}: feature columns must be numeric; not: {', '.join(non_numeric)}")
    if feats.shape[1] == 0:
        raise UserError(f"{npath}: no feature columns besides {', '.join(drop)}")
    n = len(nt)
    label_names: list[str] = []
    labels = np.full(n, -1, dtype=np.int64)
    if label_column in nt:
        lab = nt[label_column]
        have = lab.notna() & (lab.astype(str).str.strip() != "")
        label_names = sorted(lab[have].astype(str).unique())
        labels[have.to_numpy()] = lab[have].astype(str).map({c: i for i, c in enumerate(label_names)}).to_numpy()
    if split_column:
        if split_column not in nt:
            raise UserError(f"{npath}: no split column {split_column!r}")
        col = nt[split_column].fillna("").astype(str).str.strip()
        unknown = sorted(set(col) - {"train", "val", "test", ""})
        if unknown:
            raise UserError(f"{npath}: split column {split_column!r} holds {unknown}; allowed: train, val, test, empty")
        index = {s: np.flatnonzero((col == s).to_numpy()).astype(np.int64) for s in ("train", "val", "test")}
    else:
        if not 0 <= val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
            raise UserError(f"edge_list: need 0 <= val_fraction, 0 < test_fraction, and their sum < 1; got "
                            f"{val_fraction} and {test_fraction}")
        index = _split_nodes(labels, float(val_fraction), float(test_fraction), int(split_seed))
    splits = {s: NodeSplit(i, labels[i]) for s, i in index.items()}
    ei = np.stack([src, dst]).astype(np.int64)
    listed = ei.shape[1]
    if undirected:
        ei = np.concatenate([ei, ei[::-1]], axis=1)
        # an edge listed both ways is one undirected edge: keep each directed pair once
        _, first = np.unique(ei[0] * n + ei[1], return_index=True)
        ei = ei[:, np.sort(first)]
    return GraphSourceResult(features=feats.to_numpy(np.float32), edge_index=ei, labels=labels, splits=splits,
                             label_names=label_names, undirected=bool(undirected),
                             info={"path": str(path), "nodes": nodes, "edges": edges,
                                   "feature_columns": [str(c) for c in feats.columns], "edges_listed": int(listed),
                                   "sha256": {nodes: _sha256(npath), edges: _sha256(epath)}})


__all__ = ["GraphSourceResult", "GraphUnpickler", "NodeSplit", "edge_list", "load_graph_pickle", "planetoid"]
