"""One pretrain of a run at a time (issue 25, item 3): a second ``ssl-tasks pretrain --run r`` started while the
first trains fails at once with one line, before it touches the run's Ray storage or MLflow resume marker; the
lock dies with its holder, even under SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import REPO

pytestmark = pytest.mark.slow  # four ssl-tasks processes (~15 s each on the loaded 2-core machine)

HOLD = """
import sys, time
from ssl_tasks.core.io import output_lock
with output_lock(sys.argv[1], "run 'simclr'"):
    print("held", flush=True)
    time.sleep(600)
"""


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "ssl-tasks"
    return subprocess.run([str(exe), "--params", str(root / "params.yaml"), "--root", str(root), *args],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_a_second_pretrain_of_the_same_run_is_refused_and_the_lock_dies_with_its_holder(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    out = tmp_path / "artifacts" / "runs" / "simclr" / "pretrain"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        res = _cli(tmp_path, "pretrain", "--run", "simclr")
        assert res.returncode == 2, res.stderr
        assert res.stderr.strip() == (f"error: run 'simclr' is already being written by pid {holder.pid} (lock "
                                      f"{out.with_name('.pretrain.lock')}); wait for it to finish, or stop it")
        assert not (tmp_path / "mlflow").exists() and not (tmp_path / "artifacts" / ".ray").exists()
        other = _cli(tmp_path, "pretrain", "--run", "byol")  # another run is not held up (it fails on the data)
        assert "already being written" not in other.stderr and "ingested dataset" in other.stderr, other.stderr
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    time.sleep(0.1)
    after = _cli(tmp_path, "pretrain", "--run", "simclr")  # a SIGKILLed holder leaves no stale lock
    assert "already being written" not in after.stderr and "ingested dataset" in after.stderr, after.stderr
    assert yaml.safe_load((tmp_path / "params.yaml").read_text())["runs"]["simclr"]
