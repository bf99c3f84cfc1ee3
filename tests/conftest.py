"""Shared fixtures: quiet, local, repeatable settings for every real component."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

QUIET = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0",
}
for _k, _v in QUIET.items():
    os.environ.setdefault(_k, _v)
# The shared store (ssl_tasks/training/store.py): off unless a test turns it on, and its per-node cache is the
# session's own folder (inherited by the session's Ray cluster), never the developer's ~/.cache.
os.environ.pop("SSL_TASKS_STORAGE", None)
os.environ["SSL_TASKS_CACHE"] = tempfile.mkdtemp(prefix="ssl-cache-")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _shared_ray_cluster(request: pytest.FixtureRequest):  # noqa: ANN202
    """One real Ray cluster (``ray start --head``, tests/local_ray_cluster.py) that every pipeline of the session
    joins through ``RAY_ADDRESS``, as a user's pipelines join theirs (``ray.address`` / ``RAY_ADDRESS``).

    Starting a local cluster (GCS, raylet, dashboard and its eight modules, log monitor, autoscaler) costs 10-20 s
    on 2 cores, 60-90 s on a loaded one, and every ``pretrain`` stage of every pipeline test did it: dozens per
    session. The local start-up itself keeps its own tests: the fault matrix (four, SIGKILLed ones included), Ray's
    token authentication (tests/faults/test_ray_exposure.py) and the cluster test's "no RAY_ADDRESS: start local"
    drop ``RAY_ADDRESS`` on purpose. Started only when the session selected a slow test (the fast tier starts no
    Ray); ``SSL_TASKS_TEST_RAY=local`` keeps the old behaviour (each stage starts its own)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RAY_ADDRESS", raising=False)  # never the developer's own cluster
        if not any(item.get_closest_marker("slow") for item in request.session.items) or \
                os.environ.get("SSL_TASKS_TEST_RAY") == "local":
            yield None
            return
        from local_ray_cluster import LocalRayCluster

        cluster = LocalRayCluster(head_cpus=os.cpu_count() or 2)
        try:
            mp.setenv("RAY_ADDRESS", cluster.address)
            yield cluster
        finally:
            cluster.shutdown()


@pytest.fixture(autouse=True)
def _ray_disconnected_after_each_test() -> Iterator[None]:
    """A test that ran Ray in this process (``fit`` calls ``ray.init`` and, like any library call, leaves it
    connected) disconnects when it ends. A connection kept across the session outlived whatever later tests did
    to its cluster: the first fresh-clone runs hung 35 min later in ``ray.cluster_resources()`` of another test."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """In-process tests use tiny tensors: one thread avoids oversubscribing the 2-core CI machine
    (subprocess stages, Ray workers and benchmarks keep their own settings)."""
    import torch

    torch.set_num_threads(1)
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def digits_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sklearn digits ingested through the real ingest path."""
    from ssl_tasks.data.ingest import ingest

    out = tmp_path_factory.mktemp("digits") / "digits"
    ingest("sklearn_digits", None, out, test_fraction=0.2, split_seed=0)
    return out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)



@pytest.fixture(scope="session")
def colour_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real colour dataset: 30 CIFAR-10 JPEGs per class from ../shared/data, ingested as a folder."""
    import tarfile

    from ssl_tasks.data.ingest import ingest

    tar = SHARED_DATA / "cifar10_jpeg" / "cifar10_test_jpeg.tar"
    root = tmp_path_factory.mktemp("colour")
    folder = root / "pngs"
    with tarfile.open(tar) as tf:
        names = sorted(m.name for m in tf.getmembers() if m.isfile() and m.name.endswith(".jpg"))
        per_class: dict[str, int] = {}
        for name in names:
            cls = name.split("/")[-2]
            if per_class.get(cls, 0) >= 30:
                continue
            per_class[cls] = per_class.get(cls, 0) + 1
            dest = folder / cls / Path(name).name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(tf.extractfile(name).read())  # type: ignore[union-attr]
    out = root / "colour"
    ingest("image_folder", folder, out, test_fraction=0.2, split_seed=0)
    return out


@pytest.fixture(scope="session")
def text_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real text dataset: 1,200 SST-2 training phrases and 200 dev sentences, written in the text format."""
    import csv

    from ssl_tasks.modalities.text.shards import TextSplit, write_text_dataset

    def read(name: str, n: int) -> tuple[list[str], np.ndarray]:
        with open(SHARED_DATA / "sst2" / name, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1 : n + 1]
        return [r[0].strip() for r in rows], np.array([int(r[1]) for r in rows], dtype=np.int64)

    out = tmp_path_factory.mktemp("text") / "sst2_small"
    splits = {k: TextSplit(*read(f, n)) for k, f, n in (("train", "train.tsv", 1200), ("test", "dev.tsv", 200))}
    write_text_dataset(out, splits, label_names=["0", "1"], source={"name": "test_fixture"}, shard_size=500)
    return out


@pytest.fixture(scope="session")
def text_tokenizer(text_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 400-token byte-level BPE trained on the fixture's training texts."""
    from ssl_tasks.modalities.text.shards import TextDataset
    from ssl_tasks.modalities.text.tokenizer import train_text_tokenizer

    path = tmp_path_factory.mktemp("text_tok") / "tokenizer.json"
    train_text_tokenizer(TextDataset(text_dataset).iter_texts("train"), path, vocab_size=400, num_sentinels=16)
    return path


CLIPART = SHARED_DATA / "openclipart_captions"
CLIPART_OPTIONS = {"image_column": "filepath", "caption_column": ["title", "keywords"], "caption_separator": "|",
                   "label_column": "category", "label_depth": 1}


def clipart_table(dst: Path, every: int = 1) -> Path:
    """Every ``every``-th row of the real Open Clip Art captions table, written to ``dst`` (images stay shared)."""
    lines = (CLIPART / "captions.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    dst.write_text(lines[0] + "".join(lines[1::every]), encoding="utf-8")
    return dst


@pytest.fixture(scope="session")
def pair_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real image-caption dataset: every 4th Open Clip Art drawing (356) at 16x16, captions title + keywords."""
    from ssl_tasks.data.ingest import ingest

    root = tmp_path_factory.mktemp("pairs")
    table = clipart_table(root / "captions.tsv", every=4)
    out = root / "clipart_small"
    ingest("image_text_table", table, out, test_fraction=0.2, split_seed=0,
           options={**CLIPART_OPTIONS, "root": str(CLIPART), "image_size": 16})
    return out


@pytest.fixture(scope="session")
def pair_tokenizer(pair_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 400-token byte-level BPE over the pair fixture's training captions."""
    from ssl_tasks.modalities.image_text.shards import PairDataset
    from ssl_tasks.modalities.text.tokenizer import train_text_tokenizer

    path = tmp_path_factory.mktemp("pair_tok") / "tokenizer.json"
    train_text_tokenizer(PairDataset(pair_dataset).iter_texts("train"), path, vocab_size=400, num_sentinels=16)
    return path


def write_graph_tables(folder: Path, n: int = 60, dim: int = 12, classes: int = 3, seed: int = 0) -> Path:
    """A small labelled graph as edge_list tables: nodes.csv (id, label, f0..), edges.csv (source, target);
    nodes of a class share a feature pattern and link mostly within their class."""
    import pandas as pd

    r = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.arange(n) % classes
    feats = (r.random((n, dim)) < 0.15).astype(int)
    feats[np.arange(n), labels % dim] = 1
    nodes = pd.DataFrame({"id": [f"p{i}" for i in range(n)], "label": [f"c{c}" for c in labels]})
    for j in range(dim):
        nodes[f"f{j}"] = feats[:, j]
    pairs = set()
    while len(pairs) < 2 * n:
        a, b = (int(v) for v in r.integers(0, n, 2))
        if a != b and (labels[a] == labels[b] or r.random() < 0.1):
            pairs.add((min(a, b), max(a, b)))
    edges = pd.DataFrame({"source": [f"p{a}" for a, _ in sorted(pairs)], "target": [f"p{b}" for _, b in sorted(pairs)]})
    nodes.to_csv(folder / "nodes.csv", index=False)
    edges.to_csv(folder / "edges.csv", index=False)
    return folder


@pytest.fixture(scope="session")
def graph_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 60-node, 3-class graph ingested through the edge_list source (seeded 60/20/20 node split)."""
    from ssl_tasks.data.ingest import ingest

    base = tmp_path_factory.mktemp("graph")
    out = base / "graph"
    ingest("edge_list", write_graph_tables(base / "tables"), out, test_fraction=0.2, split_seed=0,
           options={"val_fraction": 0.2})
    return out


@pytest.fixture(scope="session")
def speech_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """72 train / 24 test generated clips (4 digits x 3 speakers x 8 takes, 8 kHz WAV) through the audio_table source,
    resampled to 16 kHz and cut to 0.25 s rows (12 encoder frames)."""
    from speech_corpus import write_corpus

    from ssl_tasks.data.ingest import ingest

    base = tmp_path_factory.mktemp("speech")
    out = base / "speech"
    ingest("audio_table", write_corpus(base / "corpus", takes=8, digits=4), out,
           options={"label_column": "digit", "group_column": "speaker", "split_column": "split",
                    "sample_rate": 16000, "num_samples": 4000})
    return out


@pytest.fixture(scope="session")
def video_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 train / 32 test moving Fashion-MNIST sprites (4 frames of 16 x 16, sprites 7 x 7) through the
    moving_sprites source: the real Fashion-MNIST files, a few hundred kilobytes of clips."""
    from ssl_tasks.data.ingest import ingest

    out = tmp_path_factory.mktemp("video") / "sprites"
    ingest("moving_sprites", SHARED_DATA / "fashion_mnist", out,
           options={"frames": 4, "size": 16, "sprite_size": 7, "train_clips": 64, "test_clips": 32})
    return out


@pytest.fixture(scope="session")
def speech_targets(speech_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """HuBERT's frame targets of ``speech_dataset`` (the tokenizer stage, 12 clusters): the file a job names."""
    from ssl_tasks.modalities.speech.targets import SpeechTargetConfig, train_targets

    out = tmp_path_factory.mktemp("speech_targets") / "fsdd"
    train_targets(speech_dataset, out, SpeechTargetConfig(num_clusters=12, n_init=1), lambda _line: None)
    return out / "tokenizer.json"
