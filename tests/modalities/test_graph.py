"""The graph modality: sources (Planetoid npz and pickles, edge lists), the dataset format, the GX suite, the feed,
the encoders, the node probes and the plug-in's evaluation and baselines."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_graph_tables
from helpers import needs_shared

from ssl_tasks.core.errors import UserError
from ssl_tasks.core.modality import EvalContext, get_modality, open_dataset
from ssl_tasks.data.ingest import ingest
from ssl_tasks.evaluation.protocols import EvalConfig
from ssl_tasks.modalities.graph.sources import edge_list, load_graph_pickle, planetoid
from ssl_tasks.validation.gx_suite import ValidationConfig, ValidationFailed, validate_dataset

CORA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cora"
needs_cora = needs_shared(CORA / "cora_planetoid_dense.npz", "Cora")  # missing data fails, never skips


# --------------------------------------------------------------------------- planetoid


@needs_cora
def test_planetoid_npz_and_pickles_give_the_same_graph_and_public_split() -> None:
    a = planetoid(CORA, test_fraction=0.5, split_seed=0)
    b = planetoid(CORA, test_fraction=0.5, split_seed=0, files="pickle")
    assert a.features.shape == (2708, 1433) and a.features.dtype == np.float32
    assert a.edge_index.shape == (2, 10556)  # 5,278 undirected edges, both ways
    assert {k: len(v.index) for k, v in a.splits.items()} == {"train": 140, "val": 500, "test": 1000}
    assert np.bincount(a.labels).tolist() == [351, 217, 418, 818, 426, 298, 180]
    for k in ("features", "edge_index", "labels"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    assert all(np.array_equal(a.splits[s].index, b.splits[s].index) for s in a.splits)


class _Boom:
    def __reduce__(self):  # noqa: ANN204 - the payload a malicious pickle would run
        import os

        return (os.system, ("touch /tmp/ssl_tasks_graph_pwned",))


def test_a_malicious_pickle_is_refused_before_its_payload_runs(tmp_path: Path) -> None:
    marker = Path("/tmp/ssl_tasks_graph_pwned")
    marker.unlink(missing_ok=True)
    bad = tmp_path / "ind.cora.x"
    bad.write_bytes(pickle.dumps(_Boom(), protocol=2))
    with pytest.raises(UserError, match="refused to load a pickle global"):
        load_graph_pickle(bad)
    assert not marker.exists()


@needs_cora
def test_truncated_or_malicious_planetoid_files_fail_clearly_and_write_nothing(tmp_path: Path) -> None:
    src = tmp_path / "cora"
    shutil.copytree(CORA, src)
    (src / "ind.cora.allx").write_bytes((CORA / "ind.cora.allx").read_bytes()[:1000])  # truncated
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"ind\.cora\.allx: not a readable Planetoid pickle"):
        ingest("planetoid", src, out, test_fraction=0.5, split_seed=0, options={"files": "pickle"})
    assert not out.exists()
    (src / "ind.cora.allx").write_bytes(pickle.dumps(_Boom(), protocol=2))
    with pytest.raises(UserError, match="refused"):
        ingest("planetoid", src, out, test_fraction=0.5, split_seed=0, options={"files": "pickle"})
    assert not out.exists() and not list(tmp_path.glob(".out*"))


@needs_cora
def test_cora_ingests_byte_identically_and_passes_the_suite(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    ingest("planetoid", CORA, a, test_fraction=0.5, split_seed=0)
    ingest("planetoid", CORA, b, test_fraction=0.5, split_seed=0)
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    ds = open_dataset(a)
    ds.verify()
    assert ds.num_classes == 7 and ds.count("train") == 140
    report = validate_dataset(a, tmp_path / "report.json", config=ValidationConfig(min_class_fraction=0.3, max_class_fraction=2.5))
    assert report["success"] and report["graph"]["duplicate_edges"] == 0 and report["graph"]["self_loops"] == 0
    (a / "edge_index.npy").write_bytes((a / "edge_index.npy").read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ValidationFailed, match="edge_index.npy"):
        validate_dataset(a, tmp_path / "report2.json", config=ValidationConfig())


# --------------------------------------------------------------------------- edge lists


def _ingest(folder: Path, out: Path, **options: object) -> dict:
    return ingest("edge_list", folder, out, test_fraction=0.2, split_seed=0, options=options)


def test_edge_list_split_is_seeded_stratified_and_disjoint(tmp_path: Path) -> None:
    folder = write_graph_tables(tmp_path / "t")
    r1 = edge_list(folder, test_fraction=0.2, split_seed=3)
    r2 = edge_list(folder, test_fraction=0.2, split_seed=3)
    r3 = edge_list(folder, test_fraction=0.2, split_seed=4)
    assert all(np.array_equal(r1.splits[s].index, r2.splits[s].index) for s in r1.splits)
    assert not np.array_equal(r1.splits["test"].index, r3.splits["test"].index)
    sets = [set(r1.splits[s].index.tolist()) for s in ("train", "val", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert sum(map(len, sets)) == 60 and np.bincount(r1.labels[r1.splits["test"].index]).tolist() == [4, 4, 4]
    # undirected: each listed edge stored both ways, once
    ei = r1.edge_index
    assert len({(a, b) for a, b in ei.T.tolist()}) == ei.shape[1] and {(b, a) for a, b in ei.T.tolist()} == \
        {(a, b) for a, b in ei.T.tolist()}


def test_edge_list_explicit_split_column_and_tsv(tmp_path: Path) -> None:
    folder = tmp_path / "t"
    folder.mkdir()
    pd.DataFrame({"id": [1, 2, 3, 4], "label": ["a", "b", "a", ""], "part": ["train", "test", "val", ""],
                  "x": [0.0, 1.0, 2.0, 3.0]}).to_csv(folder / "n.tsv", sep="\t", index=False)
    pd.DataFrame({"source": [1, 2, 3], "target": [2, 3, 4]}).to_csv(folder / "e.tsv", sep="\t", index=False)
    r = edge_list(folder, test_fraction=0.2, split_seed=0, nodes="n.tsv", edges="e.tsv", split_column="part",
                  undirected=False)
    assert r.labels.tolist() == [0, 1, 0, -1] and r.label_names == ["a", "b"]
    assert {s: v.index.tolist() for s, v in r.splits.items()} == {"train": [0], "val": [2], "test": [1]}
    assert r.edge_index.tolist() == [[0, 1, 2], [1, 2, 3]] and r.features.tolist() == [[0.0], [1.0], [2.0], [3.0]]


def test_edges_naming_unknown_nodes_or_no_edges_are_user_errors_and_write_nothing(tmp_path: Path) -> None:
    folder = write_graph_tables(tmp_path / "t")
    edges = pd.read_csv(folder / "edges.csv")
    pd.concat([edges, pd.DataFrame({"source": ["p1"], "target": ["ghost"]})]).to_csv(folder / "edges.csv", index=False)
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"1 edges name node ids absent .*'ghost'"):
        _ingest(folder, out)
    assert not out.exists()
    (folder / "edges.csv").write_text("source,target\n")
    with pytest.raises(UserError, match="no rows"):
        _ingest(folder, out)
    (folder / "edges.csv").write_text("")
    with pytest.raises(UserError, match="empty"):
        _ingest(folder, out)
    assert not out.exists()


def test_nan_features_self_loops_and_duplicates_fail_validation_naming_rows(tmp_path: Path) -> None:
    folder = write_graph_tables(tmp_path / "t")
    nodes = pd.read_csv(folder / "nodes.csv")
    nodes.loc[5, "f3"] = np.nan
    nodes.to_csv(folder / "nodes.csv", index=False)
    edges = pd.read_csv(folder / "edges.csv")
    extra = pd.DataFrame({"source": ["p7", edges.source[0]], "target": ["p7", edges.target[0]]})
    pd.concat([edges, extra]).to_csv(folder / "edges.csv", index=False)
    out = tmp_path / "g"
    _ingest(folder, out, undirected=False)
    with pytest.raises(ValidationFailed) as e:
        validate_dataset(out, tmp_path / "r.json", config=ValidationConfig(min_class_fraction=0.0, max_class_fraction=9))
    text = str(e.value)
    assert "node/0005" in text and "every feature finite" in text
    assert "self-loops" in text and "duplicate directed edges" in text
    g = e.value.report["graph"]
    assert g["self_loops"] == 1 and g["duplicate_edges"] == 1


def test_thresholds_allow_counted_self_loops_and_duplicates(tmp_path: Path) -> None:
    folder = write_graph_tables(tmp_path / "t")
    edges = pd.read_csv(folder / "edges.csv")
    extra = pd.DataFrame({"source": ["p7", edges.source[0]], "target": ["p7", edges.target[0]]})
    pd.concat([edges, extra]).to_csv(folder / "edges.csv", index=False)
    out = tmp_path / "g"
    _ingest(folder, out, undirected=False)
    loose = ValidationConfig(min_class_fraction=0.0, max_class_fraction=9)
    with pytest.raises(ValidationFailed):
        validate_dataset(out, tmp_path / "r.json", config=loose)
    ok = ValidationConfig(min_class_fraction=0.0, max_class_fraction=9, max_self_loops=1, max_duplicate_edges=1)
    assert validate_dataset(out, tmp_path / "r2.json", config=ok)["success"]


def test_overlapping_split_and_dangling_edge_in_a_tampered_dataset_are_named(graph_dataset: Path,
                                                                              tmp_path: Path) -> None:
    import json

    d = tmp_path / "g"
    shutil.copytree(graph_dataset, d)
    ei = np.load(d / "edge_index.npy")
    ei[1, 3] = 999
    np.save(d / "edge_index.npy", ei)
    val = np.load(d / "split_val.npy")
    np.save(d / "split_val.npy", np.sort(np.concatenate([val, np.load(d / "split_train.npy")[:1]])))
    m = json.loads((d / "manifest.json").read_text())
    m.pop("files")  # a reader without digests: the suite itself must catch it
    m["splits"]["val"]["count"] += 1
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValidationFailed) as e:
        validate_dataset(d, tmp_path / "r.json", config=ValidationConfig(min_class_fraction=0.0, max_class_fraction=9))
    text = str(e.value)
    assert "edge/3" in text and "no dangling edge" in text and "node splits disjoint" in text


# --------------------------------------------------------------------------- training and evaluation


def test_feed_is_one_full_graph_step_per_epoch_and_reads_no_labels(graph_dataset: Path, tmp_path: Path) -> None:
    from ssl_tasks.training.config import TrainConfig, TrainJob, objective_config
    from ssl_tasks.training.feeds import open_feed

    d = tmp_path / "g"
    shutil.copytree(graph_dataset, d)
    (d / "nodes.labels.npy").write_bytes(b"gone")
    job = TrainJob(run="r", seed=0, data_dir=str(d), objective="dgi", objective_config=objective_config("dgi", {}),
                   encoder="gcn",
                   encoder_kwargs={"hidden": 8}, train=TrainConfig(batch_size=32, num_workers=2), mean=(), std=())
    feed = open_feed(job)
    assert feed.count() == 60 and feed.steps_per_epoch(32, 2) == 1 == feed.steps_per_epoch(4096, 8)
    batches = list(feed.epoch(batch_size=32, seed=0, epoch=0, rank=1, world_size=2))
    assert len(batches) == 1
    x, ei = batches[0]
    assert x.shape == (60, 12) and ei.shape[0] == 2
    np.testing.assert_allclose(x.sum(1)[x.sum(1) > 0], 1.0, rtol=1e-6)  # row-normalised


def test_gcn_sparse_and_pyg_implementations_agree_and_cache_by_content() -> None:
    from ssl_tasks.modalities.graph.encoders import GCNEncoder

    g = torch.Generator().manual_seed(0)
    x = torch.rand(10, 5, generator=g)
    ei = torch.tensor([[0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6]])
    ei = torch.cat([ei, ei.flip(0)], 1)
    a, b = GCNEncoder(5, hidden=4), GCNEncoder(5, hidden=4, impl="pyg")
    b.convs[0].lin.weight.data = a.lins[0].weight.data.clone()
    torch.testing.assert_close(a(x, ei), b(x, ei))
    other = ei[:, :4].clone()  # a different edge set must not reuse the cached adjacency
    torch.testing.assert_close(a(x, other), b(x, other))


def _ctx(protocols: tuple[str, ...] = ("knn", "linear")) -> EvalContext:
    return EvalContext(protocols=protocols, settings=EvalConfig(k=5), finetune_views=None, zero_shot=None, seed=0,
                       batch_size=64, say=lambda _line: None)


def test_evaluation_and_baselines_on_the_plugin(graph_dataset: Path, tmp_path: Path) -> None:
    from ssl_tasks.pipeline.params import BaselineParams

    m = get_modality("graph")
    ds = m.open(graph_dataset)
    meta = m.encoder_meta(ds, None)
    torch.manual_seed(0)
    enc = m.build_encoder("gcn", {"hidden": 16}, meta)
    metrics, subsets, samples = m.evaluate(_ctx(), enc, ds, {**meta, "encoder": "gcn", "encoder_kwargs": {}},
                                           tmp_path, "t", trained=False)
    assert set(metrics) == {"knn/top1", "linear/top1"} and all(0 <= v <= 1 for v in metrics.values())
    assert subsets == {} and samples == []
    specs = m.baselines(ds, BaselineParams(include=("raw_pixels", "supervised"), supervised_epochs=20),
                        ["knn", "linear"])  # small_cnn -> gcn
    assert [(s.kind, s.name, s.encoder_name) for s in specs] == [("raw_pixels", "raw_features", "gcn"),
                                                                  ("supervised", "supervised_gnn", "gcn")]
    for spec in specs:
        res = m.run_baseline(_ctx(), spec, ds, tmp_path, BaselineParams(supervised_epochs=20), spec.name)
        assert set(res.metrics) == {"knn/top1", "linear/top1"}
        assert (res.encoder is None) == (spec.kind == "raw_pixels")


def test_logistic_probe_picks_c_on_val() -> None:
    from ssl_tasks.modalities.graph.probes import logistic_probe

    r = np.random.default_rng(0)
    y = np.arange(90) % 3
    emb = np.eye(3)[y] * 2 + r.normal(size=(90, 3))
    out = logistic_probe(emb, y, np.arange(30), np.arange(30, 60), np.arange(60, 90))
    assert out["top1"] > 0.7 and out["C"] in [float(c) for c in np.logspace(-3, 2, 11)]
