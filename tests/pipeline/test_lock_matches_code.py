"""The committed dvc.lock matches the code: every source dependency it records (``ssl_tasks/...`` files and
folders, params.yaml values, commands) hashes as the tree does now.

Run on a copy of the tracked files (as a fresh clone has them: no data, no ``__pycache__``), by DVC itself
(``Repo.status()``, nothing runs). Data that a stage produces is absent in such a copy and shows as "deleted" /
"not in cache"; those entries are ignored. A failure names the stage and dependency that moved since the lock was
written: regenerate dvc.lock (``make run``) and commit it with the code change.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def tracked_copy(dest: Path) -> Path:
    """The files git tracks (and untracked ones it does not ignore), copied under ``dest``, plus .dvc/config."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for rel in filter(None, out.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():  # skips deleted-but-tracked paths and submodule folders
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / ".dvc").mkdir(exist_ok=True)
    shutil.copy2(ROOT / ".dvc" / "config", dest / ".dvc" / "config")
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def is_within(path: str, folder: str) -> bool:
    return Path(path) == Path(folder) or Path(folder) in Path(path).parents


def stale_source_deps(status: dict, produced: set[str]) -> dict[str, list[str]]:
    """Per stage, what moved in its *source* inputs: deps no stage produces (a folder of several stages' outputs,
    like metrics/eval, counts as produced), params, the command."""
    stale: dict[str, list[str]] = {}
    for stage, entries in status.items():
        for entry in entries:
            if isinstance(entry, str):  # "changed command", ...; `lineage` is "always changed" by design
                if entry != "always changed":
                    stale.setdefault(stage, []).append(entry)
                continue
            for path, why in entry.get("changed deps", {}).items():
                if not any(is_within(path, out) or is_within(out, path) for out in produced):
                    stale.setdefault(stage, []).append(f"{path}: {why}")
            for file, params in entry.get("changed params", {}).items():
                stale.setdefault(stage, []).append(f"{file}: {params}")
    return stale


def source_status(copy: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    from dvc.repo import Repo

    monkeypatch.chdir(copy)  # DVC names stages and paths relative to the working directory
    with Repo(str(copy)) as repo:
        produced = {str(Path(out.def_path)) for stage in repo.index.stages for out in stage.outs}
        return stale_source_deps(repo.status(), produced)


def test_committed_dvc_lock_matches_the_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = source_status(tracked_copy(tmp_path / "clone"), monkeypatch)
    assert not stale, "dvc.lock is stale, regenerate it (make run) and commit it:\n" + "\n".join(
        f"  {stage}: {', '.join(why)}" for stage, why in sorted(stale.items()))


def test_a_changed_source_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: one byte added to a recorded code dependency shows up as that stage's."""
    copy = tracked_copy(tmp_path / "clone")
    with (copy / "ssl_tasks" / "pipeline" / "leaderboard.py").open("a") as f:
        f.write("\n")
    stale = source_status(copy, monkeypatch)
    assert "compare" in stale and any("ssl_tasks/pipeline/leaderboard.py: modified" in w for w in stale["compare"])
