"""Flow parameters applied to a params.yaml mapping, as ``dvc exp run -S`` would, and checked."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ssl_tasks.core.config import load_yaml


def apply_parameters(raw: dict[str, Any], *, dataset: str | None = None, objectives: list[str] | None = None,
                     epochs: int | None = None, num_workers: int | None = None,
                     overrides: dict[str, Any] | None = None,
                     warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Return a copy of the params.yaml mapping ``raw`` with the flow parameters applied.

    - ``objectives``: keep only these run names (from ``runs``);
    - ``dataset``: keep the runs on it (with ``objectives``, or when no run uses it: point the
      kept runs at it); either way datasets no kept run uses are dropped;
    - ``epochs`` / ``num_workers``: ``train.epochs`` / ``train.num_workers`` (and any per-run
      ``train`` override of them);
    - ``overrides``: dotted keys -> values (``{"baselines.supervised_epochs": 2}``), applied last,
      like ``dvc exp run -S``; unknown top-level keys are rejected. Keys under a run or dataset
      that ``objectives`` / ``dataset`` dropped are skipped (with a message to ``warn``).
    Raises ValueError naming the valid choices.
    """
    p = copy.deepcopy(raw)
    runs: dict[str, Any] = dict(p.get("runs") or {})
    datasets: dict[str, Any] = dict(p.get("datasets") or {})
    dropped: set[tuple[str, str]] = set()
    if objectives is not None:
        if isinstance(objectives, str):
            objectives = [objectives]
        unknown = [o for o in objectives if o not in runs]
        if unknown or not objectives:
            raise ValueError(f"unknown run name(s) in objectives: {', '.join(map(repr, unknown)) or '(empty list)'}; "
                             f"valid run names: {', '.join(runs) or '(none)'}")
        dropped |= {("runs", k) for k in runs if k not in objectives}
        runs = {k: v for k, v in runs.items() if k in objectives}
    if dataset is not None:
        if dataset not in datasets:
            raise ValueError(f"unknown dataset {dataset!r}; datasets in params: {', '.join(datasets) or '(none)'}")
        on_it = {k: v for k, v in runs.items() if (v or {}).get("dataset") == dataset}
        if objectives is None and on_it:
            dropped |= {("runs", k) for k in runs if k not in on_it}
            runs = on_it
        else:
            runs = {k: {**(v or {}), "dataset": dataset} for k, v in runs.items()}
    if objectives is not None or dataset is not None:
        used = {(v or {}).get("dataset") for v in runs.values()}
        dropped |= {("datasets", k) for k in datasets if k not in used}
        datasets = {k: v for k, v in datasets.items() if k in used}
    p["runs"], p["datasets"] = runs, datasets
    for key, value in (("epochs", epochs), ("num_workers", num_workers)):
        if value is None:
            continue
        p.setdefault("train", {})[key] = value
        for run in runs.values():
            if isinstance(run, dict) and isinstance(run.get("train"), dict) and key in run["train"]:
                run["train"][key] = value
    for dotted, value in (overrides or {}).items():
        _set_dotted(p, raw, str(dotted), value, dropped, warn)
    return p


def _set_dotted(p: dict[str, Any], raw: dict[str, Any], dotted: str, value: Any,
                dropped: set[tuple[str, str]], warn: Callable[[str], None] | None) -> None:
    """One ``overrides`` entry: ``p[a][b][c] = value`` for ``"a.b.c"`` (mappings made as needed)."""
    parts = dotted.split(".")
    if not all(parts):
        raise ValueError(f"overrides: bad key {dotted!r} (dotted params key such as 'train.epochs')")
    if parts[0] not in raw:
        raise ValueError(f"overrides: unknown top-level key {parts[0]!r} in {dotted!r}; valid: {', '.join(raw)}")
    if len(parts) > 1 and (parts[0], parts[1]) in dropped:
        if warn:
            warn(f"overrides: skipping {dotted!r}: {parts[0]}.{parts[1]} is not part of this run")
        return
    node = p
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):  # a ValueError like every other bad parameter
            raise ValueError(  # noqa: TRY004
                f"overrides: {'.'.join(parts[: i + 1])} is a {type(nxt).__name__}, not a mapping, in {dotted!r}")
        node = nxt
    node[parts[-1]] = value


def anchor_paths(params: dict[str, Any], root: Path) -> dict[str, Any]:
    """Dataset paths relative to the project root made absolute, so they hold inside a workspace too."""
    out = copy.deepcopy(params)
    for ds in (out.get("datasets") or {}).values():
        path = (ds or {}).get("path") if isinstance(ds, dict) else None
        if isinstance(path, str) and path and not Path(path).expanduser().is_absolute():
            ds["path"] = str((root / path).resolve())
    return out


def check_params(params: dict[str, Any], where: str) -> None:
    """Parse with the library's own params parser; its UserError becomes a ValueError naming ``where``."""
    from ssl_tasks.core.errors import UserError
    from ssl_tasks.pipeline.params import parse_params

    try:
        parse_params(params)
    except UserError as e:
        raise ValueError(f"{where}: {e}") from None


def workspace_params(root: Path, params_file: str | None, parameters: dict[str, Any],
                     warn: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """The params.yaml mapping a workspace gets, or None when there is nothing to apply.

    Starts from ``params_file`` (relative to ``root``; default ``root/params.yaml``), applies
    ``parameters`` (the keyword arguments of ``apply_parameters``), anchors relative dataset
    paths at ``root`` and checks the result. Raises ValueError on a missing file or bad values.
    """
    base = root / "params.yaml"
    if params_file:
        base = Path(params_file).expanduser()
        base = base if base.is_absolute() else root / base
        if not base.is_file():
            raise ValueError(f"params_file {params_file!r}: no such file ({base})")
    if not parameters and not params_file:
        return None
    raw = load_yaml(base.read_text(), str(base)) or {}
    params = anchor_paths(apply_parameters(raw, warn=warn, **parameters), root)
    check_params(params, f"{base.name} with the flow parameters")
    return params
