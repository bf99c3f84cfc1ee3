"""The shared store: where a Ray cluster whose nodes share no filesystem keeps what its workers read and write.

One switch, ``ray.storage`` in params.yaml or ``SSL_TASKS_STORAGE`` in the environment (a URI: ``s3://bucket/prefix``
for S3 or an S3-compatible store, ``gs://...``, or ``file:///path`` for a folder every node mounts), picks it over
the project's disk. With it set:

- Ray Train keeps its run storage (checkpoints, the controller's resume state) under ``<uri>/train``, so a worker
  group restarted on other nodes, or a rerun of the stage, resumes from there (``ray_runner.fit``).
- Every local file or folder a training job names (the dataset's shards, the tokenizer, a checkpoint a run starts
  from, the project's plug-in modules) is uploaded once, content-addressed, under ``<uri>/files/<sha256>`` with a
  manifest per tree under ``<uri>/trees/<key>.json`` (``stage_job``). A worker fetches each tree once per node into
  its cache (``SSL_TASKS_CACHE``, default ``~/.cache/ssl-tasks``), streaming in chunks and checking every file's
  sha256 before the tree appears under its final name (``localize_job``); datasets are then memory-mapped from
  that disk, so a worker's memory does not grow with the dataset.

S3 settings come from the standard variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` for an S3-compatible endpoint, ``AWS_DEFAULT_REGION``), which a job
brings to a cluster it joins (``ray_runner.job_env``). With the switch unset nothing here runs: the job names the
project's own paths, and Ray Train writes under ``artifacts/.ray`` as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from ssl_tasks.core.errors import UserError

STORE_ENV = "SSL_TASKS_STORAGE"
CACHE_ENV = "SSL_TASKS_CACHE"
STAGED = "ssl-tasks-store:"  # a staged path in a job: STAGED + tree key + "/" + the name under the tree
CHUNK = 8 * 1024 * 1024
# job keys whose paths are not staged as they are: the runner's own, tracking URIs, and the project folder (only its
# plug-in modules travel, see stage_job)
UNSTAGED_KEYS = ("tracking", "plugin_root")


def store_uri(configured: str | None = None) -> str | None:
    """The shared store's URI: ``ray.storage`` from params, else ``SSL_TASKS_STORAGE``, else None (local disk)."""
    uri = (configured or os.environ.get(STORE_ENV) or "").strip()
    return uri.rstrip("/") or None


def open_store(uri: str) -> tuple[Any, str]:
    """``(pyarrow filesystem, base path in it)`` for ``uri``; a URI pyarrow cannot open is a ``UserError``."""
    import pyarrow.fs as pafs

    parsed = urlparse(uri)
    if not parsed.scheme or parsed.scheme == "file" and not parsed.path.startswith("/"):
        raise UserError(f"ray.storage / {STORE_ENV}: {uri!r} is not a URI (s3://bucket/prefix, gs://bucket/prefix, "
                        "file:///absolute/path)")
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise UserError(f"ray.storage / {STORE_ENV}: {uri!r} names no bucket (s3://bucket/prefix)")
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
        kwargs: dict[str, Any] = {"region": os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
        if endpoint:
            ep = urlparse(endpoint)
            kwargs.update(endpoint_override=ep.netloc or ep.path, scheme=ep.scheme or "https")
        if os.environ.get("AWS_ACCESS_KEY_ID"):
            kwargs.update(access_key=os.environ["AWS_ACCESS_KEY_ID"],
                          secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", ""))
        return pafs.S3FileSystem(**kwargs), f"{parsed.netloc}{parsed.path}".rstrip("/")
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except Exception as e:  # pyarrow's own message says what it does not support
        raise UserError(f"ray.storage / {STORE_ENV}: cannot open {uri!r}: {e}") from None
    return fs, path.rstrip("/")


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ssl-tasks").expanduser()


# ----------------------------------------------------------------------------------------- driver: upload


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _tree_entries(path: Path) -> list[tuple[str, Path]]:
    """``(name under the tree, local file)`` for a file (its own name) or every file under a folder."""
    if path.is_file():
        return [(path.name, path)]
    return [(p.relative_to(path).as_posix(), p) for p in sorted(path.rglob("*")) if p.is_file()]


def stage_tree(fs: Any, base: str, entries: list[tuple[str, Path]]) -> str:
    """Upload ``entries`` (each file once, by content) and their manifest; return the tree's key."""
    files = []
    for name, local in entries:
        digest, size = _sha256(local), local.stat().st_size
        files.append({"path": name, "size": size, "sha256": digest})
        target = f"{base}/files/{digest}"
        info = fs.get_file_info(target)
        if info.type.name == "File" and info.size == size:
            continue  # already there (same content)
        tmp = f"{base}/files/.{digest}.{os.getpid()}.part"  # a half-written object never has a final name
        with open(local, "rb") as src, fs.open_output_stream(tmp) as dst:
            while block := src.read(CHUNK):
                dst.write(block)
        fs.move(tmp, target)
    manifest = json.dumps({"files": files}, sort_keys=True).encode()
    key = hashlib.sha256(manifest).hexdigest()
    target = f"{base}/trees/{key}.json"
    if fs.get_file_info(target).type.name != "File":
        with fs.open_output_stream(target) as out:
            out.write(manifest)
    return key


def stage_job(config: dict[str, Any], uri: str) -> dict[str, Any]:
    """``config`` (``job_to_dict``'s data) with every absolute local path it names replaced by a staged reference.

    A file stays a file (``<tree>/<its name>``), a folder a folder. The project's plug-in modules (``plugins``
    found in ``plugin_root``) become one tree, the workers' ``plugin_root``; a plug-in installed as a package stays
    the node's own.
    """
    fs, base = open_store(uri)
    fs.create_dir(f"{base}/files", recursive=True)
    fs.create_dir(f"{base}/trees", recursive=True)

    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: (v if k in UNSTAGED_KEYS else walk(v, k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(walk(v) for v in value)
        if isinstance(value, str) and value.startswith("/") and Path(value).exists():
            path = Path(value)
            tree = stage_tree(fs, base, _tree_entries(path))
            return f"{STAGED}{tree}/{path.name}" if path.is_file() else f"{STAGED}{tree}"
        return value

    out = walk(config)
    root = config.get("plugin_root")
    if root:
        entries: list[tuple[str, Path]] = []
        for name in config.get("plugins", ()):
            top = name.split(".")[0]
            module, package = Path(root) / f"{top}.py", Path(root) / top
            if module.is_file():
                entries.append((module.name, module))
            elif package.is_dir():
                entries += [(f"{top}/{n}", p) for n, p in _tree_entries(package) if "__pycache__" not in n]
        out["plugin_root"] = f"{STAGED}{stage_tree(fs, base, entries)}" if entries else ""
    return out


# ----------------------------------------------------------------------------------------- worker: fetch


def _safe_name(name: str) -> PurePosixPath:
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts:
        raise UserError(f"shared store: a manifest names {name!r}, a path outside its tree; refusing it")
    return p


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # one fetch per tree per node; the others wait, then find it there
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def fetch_tree(fs: Any, base: str, key: str, cache: Path | None = None) -> Path:
    """The local folder of tree ``key``, fetched into the node's cache unless already there; every file's sha256 is
    checked while it streams, and the folder gets its final name only when all of them match."""
    cache = cache or cache_root()
    final = cache / "trees" / key
    if final.is_dir():
        return final
    with _locked(cache / "trees" / f".{key}.lock"):
        if final.is_dir():
            return final
        try:
            with fs.open_input_stream(f"{base}/trees/{key}.json") as f:
                raw = f.read()
        except FileNotFoundError:
            raise UserError(f"shared store: tree {key} is not in {base}/trees (was the store emptied?)") from None
        if hashlib.sha256(raw).hexdigest() != key:
            raise UserError(f"shared store: the manifest of tree {key} does not match its key")
        manifest = json.loads(raw)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
        try:
            for entry in manifest["files"]:
                dst = tmp / _safe_name(entry["path"])
                dst.parent.mkdir(parents=True, exist_ok=True)
                h, size = hashlib.sha256(), 0
                with fs.open_input_stream(f"{base}/files/{entry['sha256']}") as src, open(dst, "wb") as out:
                    while block := src.read(CHUNK):
                        h.update(block)
                        size += len(block)
                        out.write(block)
                if h.hexdigest() != entry["sha256"] or size != entry["size"]:
                    raise UserError(f"shared store: {entry['path']} of tree {key} is corrupt (sha256 "
                                    f"{h.hexdigest()[:12]}..., {size} bytes; expected {entry['sha256'][:12]}..., "
                                    f"{entry['size']} bytes)")
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def localize_job(config: dict[str, Any], uri: str, cache: Path | None = None) -> dict[str, Any]:
    """``stage_job``'s output with every staged reference replaced by its path in this node's cache."""
    fs, base = open_store(uri)

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(walk(v) for v in value)
        if isinstance(value, str) and value.startswith(STAGED):
            key, _, name = value.removeprefix(STAGED).partition("/")
            folder = fetch_tree(fs, base, key, cache)
            return str(folder / _safe_name(name)) if name else str(folder)
        return value

    return walk(config)
