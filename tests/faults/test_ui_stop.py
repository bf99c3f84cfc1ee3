"""``ui.sh stop`` kills only what ``ui.sh start`` started (issue 25, item 12): it killed whatever process now had the
pid in a stale pid file. The pid file records the process's start time too, and a mismatch is reported, not killed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from helpers import REPO


def _project(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "infra" / "local").mkdir(parents=True)
    shutil.copy(REPO / "infra" / "local" / "ui.sh", tmp_path / "infra" / "local" / "ui.sh")
    run = tmp_path / ".prefect" / "run"
    run.mkdir(parents=True)
    return tmp_path / "infra" / "local" / "ui.sh", run


def _start_time(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19]


def test_stop_spares_a_process_that_reused_a_stale_pid(tmp_path: Path) -> None:
    script, run = _project(tmp_path)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    # as ui.sh starts its servers: setsid, in the background, not our child (a child of ours would linger as a zombie)
    spawn = "setsid sleep 120 </dev/null >/dev/null 2>&1 & echo $!"
    ours = int(subprocess.run(["bash", "-c", spawn], capture_output=True, text=True, check=True).stdout)
    try:
        (run / "mlflow.pid").write_text(f"{bystander.pid} 1\n")  # its pid, another start time: a reused pid
        (run / "prefect.pid").write_text(f"{bystander.pid}\n")  # the old format: no start time to check
        (run / "serve.pid").write_text(f"{ours} {_start_time(ours)}\n")
        res = subprocess.run(["bash", str(script), "stop"], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert "mlflow: not running (stale pid file" in res.stdout and "prefect: not running" in res.stdout
        assert f"stopping the served deployment (pid {ours}) ..." in res.stdout  # each step says what it waits on
        assert bystander.poll() is None, "ui.sh stop killed a process it did not start"
        assert not Path(f"/proc/{ours}").exists() or "Z" in Path(f"/proc/{ours}/stat").read_text().split(") ")[1][:1]
        assert not list(run.glob("*.pid"))
    finally:
        bystander.kill()
        bystander.wait()
        subprocess.run(["kill", "-KILL", str(ours)], capture_output=True)
