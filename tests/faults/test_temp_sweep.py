"""No temporary folders outlive a killed stage (issue 25, item 12): a SIGKILLed ingest left a hidden
``.<out>.<random>.tmp`` of 13-53 MB that nothing removed. Temporaries are named after their writer's pid, and the next
writer of the same output removes those of writers that no longer run (never a live one's)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO

from ssl_tasks.core.io import atomic_dir, write_json_atomic


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_the_next_write_removes_what_dead_writers_left_and_keeps_live_ones(tmp_path: Path) -> None:
    out = tmp_path / "data"
    dead, live = _dead_pid(), subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [tmp_path / f".data.{dead}-0badc0de.tmp", tmp_path / f".data.old-{dead}"]
        for d in stale:
            (d / "sub").mkdir(parents=True)
        stale_file = tmp_path / f".m.json.{dead}-12345678.tmp"
        stale_file.write_text("{}")
        running = tmp_path / f".data.{live.pid}-abcdef01.tmp"
        running.mkdir()
        other = [tmp_path / ".data.v2.1-aaaa.tmp", tmp_path / ".datafile.tmp"]  # not this output's
        for d in other:
            d.mkdir()
        with atomic_dir(out) as tmp:
            assert tmp.name.startswith(f".data.{os.getpid()}-")
            (tmp / "x").write_text("x")
        write_json_atomic(tmp_path / "m.json", {})
        assert not any(p.exists() for p in [*stale, stale_file])
        assert running.is_dir() and all(d.is_dir() for d in other)
        assert (out / "x").read_text() == "x"
    finally:
        live.kill()
        live.wait()


@pytest.mark.slow
def test_a_sigkilled_ingest_leaves_nothing_after_the_next_one(tmp_path: Path) -> None:
    from PIL import Image

    images = tmp_path / "pngs"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (images / cls).mkdir(parents=True)
        for i in range(1500):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(images / cls / f"{i}.png")
    cmd = [str(Path(sys.executable).parent / "ssl-tasks"), "ingest", "--source", "image_folder", "--path", str(images),
           "--out", str(tmp_path / "out")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.*.tmp")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the ingest ended before it could be killed mid-write"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob(".out.*.tmp"))  # what the kill left
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "pngs"]
