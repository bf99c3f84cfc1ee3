"""The shared store (ssl_tasks/training/store.py) on a real pyarrow filesystem: a ``file://`` folder here, the same
code path as S3 (tests/infra/test_shared_services.py runs it against SeaweedFS on a 2-node Ray cluster)."""

from __future__ import annotations

import hashlib
import json
import threading
import tracemalloc
from pathlib import Path

import pytest

from ssl_tasks.core.errors import UserError
from ssl_tasks.training.store import CHUNK, STAGED, fetch_tree, localize_job, open_store, stage_job, store_uri


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    data = root / "data" / "toy"
    (data / "train").mkdir(parents=True)
    (data / "manifest.json").write_text(json.dumps({"format": "toy", "n": 3}))
    (data / "train" / "x.npy").write_bytes(bytes(range(256)) * 40)
    (data / "train" / "y.npy").write_bytes(b"\x01\x02\x03")
    (root / "tok").mkdir()
    (root / "tok" / "tokenizer.json").write_text('{"vocab": 1}')
    (root / "my_plugin.py").write_text("VALUE = 7\n")
    (root / "pkg_plugin").mkdir()
    (root / "pkg_plugin" / "__init__.py").write_text("from .inner import X\n")
    (root / "pkg_plugin" / "inner.py").write_text("X = 1\n")
    (root / "unrelated.txt").write_text("never staged")
    return root


def _job(project: Path) -> dict:
    return {"run": "r", "data_dir": str(project / "data" / "toy"),
            "tokenizer": str(project / "tok" / "tokenizer.json"), "init_encoder": "",
            "objective_config": {"tokenizer": str(project / "tok" / "tokenizer.json"), "mode": "abs/not/a/path"},
            "plugins": ["my_plugin", "pkg_plugin.inner", "installed_elsewhere"], "plugin_root": str(project),
            "tracking": {"uri": f"sqlite:///{project}/mlflow.db", "run_id": "x"}, "_threads": 1}


def test_a_staged_job_names_no_project_path_and_each_node_gets_identical_files(project: Path, tmp_path: Path) -> None:
    uri = f"file://{tmp_path / 'store'}"
    staged = stage_job(_job(project), uri)
    text = json.dumps({k: v for k, v in staged.items() if k != "tracking"})
    assert str(project) not in text  # nothing a worker reads points at the project's disk
    assert staged["data_dir"].startswith(STAGED) and staged["tokenizer"].endswith("/tokenizer.json")
    assert staged["objective_config"]["mode"] == "abs/not/a/path" and staged["init_encoder"] == ""
    assert staged["tracking"] == _job(project)["tracking"]

    for node in ("node-a", "node-b"):  # two nodes, two caches
        local = localize_job(staged, uri, cache=tmp_path / node)
        data = Path(local["data_dir"])
        assert data.is_relative_to(tmp_path / node)
        assert _tree(data) == _tree(project / "data" / "toy")
        assert Path(local["tokenizer"]).read_text() == '{"vocab": 1}'
        assert local["objective_config"]["tokenizer"] == local["tokenizer"]
        # only the plug-in modules travel, as files a worker can import from its plugin_root
        assert _tree(Path(local["plugin_root"])) == {k: v for k, v in _tree(project).items()
                                                     if k in ("my_plugin.py", "pkg_plugin/__init__.py",
                                                              "pkg_plugin/inner.py")}


def test_restaging_uploads_nothing_and_fetching_twice_reuses_the_cache(project: Path, tmp_path: Path) -> None:
    uri = f"file://{tmp_path / 'store'}"
    first = stage_job(_job(project), uri)
    objects = {p: p.stat().st_mtime_ns for p in (tmp_path / "store").rglob("*") if p.is_file()}
    assert stage_job(_job(project), uri) == first
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "store").rglob("*") if p.is_file()} == objects
    a = localize_job(first, uri, cache=tmp_path / "c")
    mtime = Path(a["data_dir"], "manifest.json").stat().st_mtime_ns
    assert localize_job(first, uri, cache=tmp_path / "c") == a
    assert Path(a["data_dir"], "manifest.json").stat().st_mtime_ns == mtime
    # a changed file is a new tree: the old cache entry is never served for it
    (project / "data" / "toy" / "train" / "y.npy").write_bytes(b"\x09")
    changed = stage_job(_job(project), uri)
    assert changed["data_dir"] != first["data_dir"]
    assert Path(localize_job(changed, uri, cache=tmp_path / "c")["data_dir"], "train", "y.npy").read_bytes() == b"\x09"


def test_a_corrupt_object_is_refused_by_name_and_leaves_no_cache_entry(project: Path, tmp_path: Path) -> None:
    uri = f"file://{tmp_path / 'store'}"
    staged = stage_job(_job(project), uri)
    digest = hashlib.sha256((project / "data" / "toy" / "train" / "x.npy").read_bytes()).hexdigest()
    obj = tmp_path / "store" / "files" / digest
    obj.write_bytes(obj.read_bytes()[:-1] + b"\x00")  # its last byte was 0xff
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match=r"train/x\.npy of tree [0-9a-f]+ is corrupt"):
        localize_job(staged, uri, cache=cache)
    key = staged["data_dir"].removeprefix(STAGED)
    assert [p.name for p in (cache / "trees").iterdir()] == [f".{key}.lock"]  # no tree, no half-fetched folder


def test_a_manifest_naming_a_path_outside_its_tree_is_refused(tmp_path: Path) -> None:
    fs, base = open_store(f"file://{tmp_path / 'store'}")
    fs.create_dir(f"{base}/trees", recursive=True)
    manifest = json.dumps({"files": [{"path": "../escape", "size": 1, "sha256": "0" * 64}]}, sort_keys=True).encode()
    key = hashlib.sha256(manifest).hexdigest()
    (tmp_path / "store" / "trees" / f"{key}.json").write_bytes(manifest)
    with pytest.raises(UserError, match="outside its tree"):
        fetch_tree(fs, base, key, tmp_path / "cache")
    assert not (tmp_path / "escape").exists()


def test_a_tree_missing_from_the_store_is_one_clear_error(tmp_path: Path) -> None:
    fs, base = open_store(f"file://{tmp_path / 'store'}")
    with pytest.raises(UserError, match="is not in .*trees"):
        fetch_tree(fs, base, "ab" * 32, tmp_path / "cache")


def test_fetching_streams_memory_stays_flat_as_the_file_grows(tmp_path: Path) -> None:
    big = tmp_path / "src" / "big.bin"
    big.parent.mkdir()
    with open(big, "wb") as f:
        for i in range(12):  # 96 MiB
            f.write(bytes([i]) * CHUNK)
    uri = f"file://{tmp_path / 'store'}"
    tracemalloc.start()
    try:
        staged = stage_job({"data_dir": str(big.parent)}, uri)
        local = localize_job(staged, uri, cache=tmp_path / "cache")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert Path(local["data_dir"], "big.bin").stat().st_size == 12 * CHUNK
    assert peak < 4 * CHUNK, f"peak {peak / 2**20:.0f} MiB for a {12 * CHUNK / 2**20:.0f} MiB file"


def test_workers_fetching_one_tree_at_once_download_it_once(project: Path, tmp_path: Path) -> None:
    uri = f"file://{tmp_path / 'store'}"
    staged = stage_job(_job(project), uri)
    results, errors = [], []

    def worker() -> None:
        try:
            results.append(localize_job(staged, uri, cache=tmp_path / "cache")["data_dir"])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    entries = [p.name for p in (tmp_path / "cache" / "trees").iterdir()]
    # three trees (dataset, tokenizer, plug-ins), each with its lock file, and no second or half-fetched copy
    assert len([n for n in entries if not n.startswith(".")]) == 3
    assert all(n.endswith(".lock") for n in entries if n.startswith(".")), entries


@pytest.mark.parametrize("uri, match", [("not-a-uri", "is not a URI"), ("s3://", "names no bucket"),
                                        ("file://relative", "is not a URI"), ("nosuchscheme://x/y", "cannot open")])
def test_a_bad_store_uri_is_one_clear_error(uri: str, match: str) -> None:
    with pytest.raises(UserError, match=match):
        open_store(uri)


def test_the_switch_params_first_then_the_environment_else_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_TASKS_STORAGE", raising=False)
    assert store_uri(None) is None and store_uri("") is None
    monkeypatch.setenv("SSL_TASKS_STORAGE", "s3://team/ssl/")
    assert store_uri(None) == "s3://team/ssl"
    assert store_uri("file:///srv/store") == "file:///srv/store"
