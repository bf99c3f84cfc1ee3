"""What every results file in bench/results/ records about how it was made, read at run time, never typed.

``provenance(args)`` returns ``{"command", "argv", "args", "commit", "dirty", "cpu", "cores", "python", "torch",
"recorded_utc"}``: the command line as run, the parsed arguments, the git commit of the checkout (and whether it
had uncommitted changes), and the machine's CPU model from ``/proc/cpuinfo`` (``platform.processor()`` only
says ``x86_64`` on Linux). Every bench script that writes a results file stores it under ``"provenance"``;
``machine_line()`` is the one-line ``"<cpu>, <n> cores"`` form the older files carry as ``"machine"``.
Scripts that add rows to an existing file (``quality.py``, ``text_quality.py``) also keep the provenance of the
invocations that wrote its earlier rows (``earlier_provenance``), so ``args`` never has to describe rows it did
not write (the ``skip_baselines: true`` files that hold baseline rows).
:class:`ResultsFile` is the loop of the scripts that rewrite their results file after every row they measure
(``video_quality.py``, ``speech_pretrain.py``, ``graph_quality.py``), so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name as the kernel reports it (``model name`` in /proc/cpuinfo), else what Python knows."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def git_commit(repo: Path = REPO) -> tuple[str | None, bool | None]:
    """(HEAD's full hash, whether tracked files differ from it); (None, None) outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return head.stdout.strip(), bool(status.stdout.strip())


def machine_line(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    return f"{cpu_model(cpuinfo)}, {os.cpu_count()} cores"


def provenance(args: argparse.Namespace | dict[str, Any] | None = None, argv: list[str] | None = None,
               cpuinfo: Path = Path("/proc/cpuinfo"), repo: Path = REPO) -> dict[str, Any]:
    argv = list(sys.argv if argv is None else argv)
    commit, dirty = git_commit(repo)
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:  # pragma: no cover - every bench script imports torch
        torch_version = None
    return {
        "command": shlex.join(["python", *argv]),
        "argv": argv,
        "args": dict(vars(args) if isinstance(args, argparse.Namespace) else (args or {})),
        "commit": commit,
        "dirty": dirty,
        "cpu": cpu_model(cpuinfo),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch_version,
        "recorded_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def earlier_provenance(out: Path) -> list[dict[str, Any]]:
    """The provenance of every earlier invocation whose rows an existing results file keeps (scripts that add rows
    to a file rewrite its ``args`` with the latest invocation's; this keeps the others, oldest first)."""
    try:
        old = json.loads(Path(out).read_text())
    except (OSError, ValueError):
        return []
    return [*old.get("earlier_provenance", []), *([old["provenance"]] if old.get("provenance") else [])]


class ResultsFile:
    """A results document (``out``: its provenance, settings and ``out[key]``, rows by name) kept on disk at
    ``path``: every :meth:`record` appends a row and rewrites the whole file atomically (a ``.tmp`` beside it,
    then renamed), as indented JSON (``indent=1``)."""

    def __init__(self, path: Path | str, out: dict[str, Any], key: str = "rows") -> None:
        self.path, self.out, self.key = Path(path), out, key
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, seed: int, metrics: dict[str, Any]) -> list[dict[str, Any]]:
        """Append ``{"seed": seed, **metrics}`` to the rows of ``name`` (not yet written); return those rows."""
        rows = self.out[self.key].setdefault(name, [])
        rows.append({"seed": seed, **metrics})
        return rows

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.out, indent=1) + "\n")
        tmp.replace(self.path)

    def record(self, name: str, seed: int, metrics: dict[str, Any]) -> None:
        """Add a row, rewrite the file and print the row (its metrics but the ``log``)."""
        self.add(name, seed, metrics)
        self.write()
        print(f"{name} seed {seed}: " + ", ".join(f"{k}={v}" for k, v in metrics.items() if k != "log"), flush=True)
