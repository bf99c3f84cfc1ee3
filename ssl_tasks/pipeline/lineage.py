"""The files params name, made DVC dependencies: a dataset's source ``path``, the checkpoints a run starts from
(``runs.<r>.init_encoder``, ``runs.<r>.objective_kwargs.init_image``), the checkpoint a dataset's tokenizer reads
(``datasets.<ds>.tokenizer.checkpoint``) and the source of ``plugins`` modules.

DVC cannot depend on them directly: a ``foreach`` stage's ``deps`` can only interpolate a value every item has
(``${item.path}`` fails for a dataset without a path) and never a list. So the ``lineage`` stage, which DVC runs
on every ``dvc repro`` (``always_changed``; it reads params.yaml as plain YAML and hashes files, no torch), writes one
small file per dataset and per run, ``artifacts/lineage/{dataset,tokenizer,run}-<name>.json``, holding the sha256 of
what that item's params name; ``ingest@<ds>``, ``tokenizer@<ds>`` and ``pretrain@<run>`` depend on their own file,
so DVC reruns exactly the stages whose named files changed. ``plugins.json`` holds the plug-ins' source, which any stage may run: every stage
depends on it.

A start checkpoint that another stage writes (SimCSE from ``artifacts/runs/mlm/pretrain/seed-0/encoder.pt``) has no
DAG edge from that stage, so within one ``dvc repro`` its run may be visited before the run it starts from is
retrained. ``pretrain`` records in each seed's ``meta.json`` the sha256 of every start it read (``starts``);
``evaluate`` and ``compare`` refuse a run whose start has changed since (``check_starts``), and the next
``lineage`` writes the new hash, so the next ``dvc repro`` retrains it. A run that is fresh keeps its previous
lineage entry, so a start written later in the same ``dvc repro`` does not retrain it twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from ssl_tasks.core.errors import UserError
from ssl_tasks.core.io import sha256_file, write_json_atomic

MISSING = "missing"


def lineage_dir(root: Path) -> Path:
    return root / "artifacts" / "lineage"


def fingerprint(path: Path, skip: Path | None = None) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, in sorted order), leaving out
    ``__pycache__`` and the folder ``skip`` (the project, whose outputs change as it runs); ``missing``."""
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        return MISSING
    skip = skip.resolve() if skip is not None else None
    h = hashlib.sha256()
    for folder, dirs, files in os.walk(path, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and (Path(folder) / d).resolve() != skip)
        for name in sorted(files):
            f = Path(folder) / name
            h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def _resolve(value: str, root: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


def _outside(folder: Path, root: Path) -> bool:
    """Whether ``folder`` neither holds the project nor lies in it."""
    folder, root = folder.resolve(), root.resolve()
    return folder not in (root, *root.parents) and root not in folder.parents


def dataset_inputs(raw: dict[str, Any], root: Path) -> dict[str, dict[str, tuple[str, Path]]]:
    """Per dataset, what its ingest reads that no stage writes (params key -> (value, path to hash)):
    ``datasets.<ds>.path``; for a file outside the project its whole folder, since a table source reads the images
    beside its table (inside the project, or in a folder holding it, the file alone: that folder holds outputs)."""
    out: dict[str, dict[str, tuple[str, Path]]] = {}
    for name, d in (raw.get("datasets") or {}).items():
        value = d.get("path") if isinstance(d, dict) else None
        inputs = {}
        if isinstance(value, str) and value:
            path = _resolve(value, root)
            if path.is_file() and _outside(path.parent, root):
                path = path.parent
            inputs[f"datasets.{name}.path"] = (value, path)
        out[str(name)] = inputs
    return out


def tokenizer_inputs(raw: dict[str, Any], root: Path) -> dict[str, dict[str, tuple[str, Path]]]:
    """Per dataset, the checkpoint its tokenizer stage reads (``datasets.<ds>.tokenizer.checkpoint``: HuBERT's
    iteration-2 targets are k-means on a pretrained encoder's frames), as ``{params key: (value, path)}``."""
    out: dict[str, dict[str, tuple[str, Path]]] = {}
    for name, d in (raw.get("datasets") or {}).items():
        tok = d.get("tokenizer") if isinstance(d, dict) else None
        value = tok.get("checkpoint") if isinstance(tok, dict) else None
        out[str(name)] = ({f"datasets.{name}.tokenizer.checkpoint": (value, _resolve(value, root))}
                          if isinstance(value, str) and value else {})
    return out


def run_starts(run: str, spec: dict[str, Any], root: Path) -> dict[str, tuple[str, Path]]:
    """The checkpoints run ``run`` starts from (params key -> (value, absolute path)), from its params mapping."""
    starts = {}
    init = spec.get("init_encoder")
    if isinstance(init, str) and init:
        starts[f"runs.{run}.init_encoder"] = (init, _resolve(init, root))
    image = (spec.get("objective_kwargs") or {}).get("init_image")
    if isinstance(image, str) and image:
        starts[f"runs.{run}.objective_kwargs.init_image"] = (image, _resolve(image, root))
    return starts


def plain_run(spec: Any) -> dict[str, Any]:
    """The start keys of a typed ``RunParams`` as the plain mapping the functions here read."""
    return {"init_encoder": spec.init_encoder, "objective_kwargs": spec.objective_kwargs}


def plain_runs(params: Any) -> dict[str, Any]:
    return {"runs": {name: plain_run(spec) for name, spec in params.runs.items()}}


def plugin_sources(raw: dict[str, Any], root: Path) -> dict[str, tuple[str, Path]]:
    """Where each ``plugins`` module's source is, found as ``load_plugins`` imports it (``sys.path``, then the
    project folder) without importing it: a module's file, a package's folder (its top-level package, whose
    ``__init__`` runs too); a module that cannot be found is ``missing`` (its stages then fail to import it)."""
    import importlib.machinery

    names = raw.get("plugins") or []
    found = {}
    for name in names if isinstance(names, list) else []:
        top = str(name).split(".")[0]
        spec = importlib.machinery.PathFinder.find_spec(top, [*sys.path, str(root)])
        if spec is not None and spec.submodule_search_locations:
            path = Path(next(iter(spec.submodule_search_locations)))
        elif spec is not None and spec.origin:
            path = Path(spec.origin)
        else:
            path = root / f"{top}.missing"
        found[f"plugins.{name}"] = (str(name), path)
    return found


def _entry(inputs: dict[str, tuple[str, Path]], root: Path) -> dict[str, dict[str, str]]:
    """What a lineage file holds: per params key, the value as written (not resolved: a moved project is the same
    project) and the sha256 of what it names."""
    return {key: {"path": value, "sha256": fingerprint(path, root)} for key, (value, path) in inputs.items()}


def start_records(run: str, spec: dict[str, Any], root: Path) -> list[dict[str, str]]:
    """What ``pretrain@<run>`` keeps in each seed's ``meta.json``: every start's key, path and sha256."""
    return [{"key": key, **rec} for key, rec in _entry(run_starts(run, spec, root), root).items()]


def trained_from(pretrain_dir: Path) -> dict[str, set[str]]:
    """The start hashes each seed of a finished pretrain recorded (key -> hashes); empty when it has not run."""
    seen: dict[str, set[str]] = {}
    for meta in sorted(pretrain_dir.glob("seed-*/meta.json")):
        for rec in json.loads(meta.read_text()).get("starts", []):
            seen.setdefault(rec["key"], set()).add(rec["sha256"])
    return seen


def stale_starts(raw: dict[str, Any], root: Path, runs: list[str] | None = None) -> list[str]:
    """One line per finished run (of ``runs``, default all) whose start checkpoint changed after it was trained."""
    lines = []
    for run, spec in (raw.get("runs") or {}).items():
        if runs is not None and run not in runs:
            continue
        pdir = root / "artifacts" / "runs" / run / "pretrain"
        recorded = trained_from(pdir)
        for key, (value, path) in run_starts(run, spec or {}, root).items():
            now = fingerprint(path, root)
            if key in recorded and recorded[key] != {now}:
                lines.append(f"pretrain@{run} started from {value} ({key}), which has changed since "
                             f"(sha256 {'/'.join(sorted(h[:12] for h in recorded[key]))} then, {now[:12]} now)")
    return lines


def check_starts(raw: dict[str, Any], root: Path, runs: list[str] | None = None) -> None:
    """Refuse (``UserError``) to read a run trained from a start checkpoint that has changed since."""
    stale = stale_starts(raw, root, runs)
    if stale:
        names = sorted({line.split()[0] for line in stale})
        raise UserError("stale results refused: " + "; ".join(stale) + ". `dvc repro` again retrains "
                        f"{', '.join(names)} (the lineage stage now records the new start), then reads it")


def load_raw(params_file: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(Path(params_file).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"cannot read {params_file}: {e}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{params_file}: expected a mapping at the top level")
    return raw


def _previous(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_lineage(raw: dict[str, Any], root: Path) -> dict[str, Path]:
    """The ``lineage`` stage: ``artifacts/lineage/dataset-<ds>.json``, ``tokenizer-<ds>.json`` and ``run-<run>.json``
    for every dataset and run (``{}`` when its params name no file) and ``plugins.json``, replacing the folder's files; returns what it
    wrote."""
    out = lineage_dir(root)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {"plugins": out / "plugins.json"}
    write_json_atomic(written["plugins"], _entry(plugin_sources(raw, root), root))
    for name, inputs in dataset_inputs(raw, root).items():
        written[f"dataset-{name}"] = out / f"dataset-{name}.json"
        write_json_atomic(written[f"dataset-{name}"], _entry(inputs, root))
    for name, inputs in tokenizer_inputs(raw, root).items():
        written[f"tokenizer-{name}"] = out / f"tokenizer-{name}.json"
        write_json_atomic(written[f"tokenizer-{name}"], _entry(inputs, root))
    for run, spec in (raw.get("runs") or {}).items():
        target = out / f"run-{run}.json"
        written[f"run-{run}"] = target
        entry = _entry(run_starts(run, spec or {}, root), root)
        recorded = trained_from(root / "artifacts" / "runs" / run / "pretrain")
        fresh = bool(entry) and all(recorded.get(k) == {v["sha256"]} for k, v in entry.items())
        previous = _previous(target)
        same = previous is not None and {k: v.get("path") for k, v in previous.items()} == {
            k: v["path"] for k, v in entry.items()}
        if fresh and same:
            entry = previous  # trained from what is there now: keep what DVC recorded when it was trained
        write_json_atomic(target, entry)
    for stale in set(out.glob("*.json")) - set(written.values()):
        stale.unlink()
    return written
