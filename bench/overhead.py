"""Default pipeline wall time split into compute and orchestration overhead.

Runs `dvc repro` of the default pipeline in a fresh copy of the project, once with each stage
starting its own local Ray, and once with one Ray cluster shared by all stages of the run
(`ray start --head` + RAY_ADDRESS, what `make run` does). Each stage appends its compute time
(training epochs, evaluation protocols, ingest, validation) to $SSL_TASKS_TIMING_LOG; overhead is
wall time minus compute: process start-up and imports, DVC hashing, Ray start-up, MLflow logging.

    python bench/overhead.py --out bench/results/overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def fresh_copy(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    for f in files:
        if f != "dvc.lock" and (REPO / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dest / f)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def run_once(shared_ray: bool) -> dict:
    root = fresh_copy(Path(tempfile.mkdtemp(prefix="bench-overhead-")))
    log = root / "timing.jsonl"
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "SSL_TASKS_TIMING_LOG": str(log)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    if shared_ray:
        t_ray = time.perf_counter()
        subprocess.run([str(BIN / "ray"), "start", "--head", "--num-cpus", str(os.cpu_count()),
                        "--dashboard-host", "127.0.0.1", "--disable-usage-stats"], env=env, check=True,
                       capture_output=True)
        env["RAY_ADDRESS"] = "auto"
        ray_start = time.perf_counter() - t_ray
    t0 = time.perf_counter()
    try:
        res = subprocess.run([str(BIN / "dvc"), "repro"], cwd=root, env=env, capture_output=True, text=True)
    finally:
        if shared_ray:
            subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True)
    wall = time.perf_counter() - t0 + (ray_start if shared_ray else 0.0)
    if res.returncode != 0:
        raise SystemExit(res.stdout[-2000:] + res.stderr[-4000:])
    records = [json.loads(line) for line in log.read_text().splitlines()]
    stages = [r for r in records if "compute_s" in r]
    processes = [r for r in records if "process_s" in r]
    compute = sum(s["compute_s"] for s in stages)
    in_process = sum(p["process_s"] for p in processes)
    shutil.rmtree(root, ignore_errors=True)
    return {"shared_ray_cluster": shared_ray, "wall_s": round(wall, 1), "compute_s": round(compute, 1),
            "overhead_s": round(wall - compute, 1), "overhead_fraction": round((wall - compute) / wall, 3),
            # where the overhead goes: inside the stage processes (imports, Ray start, MLflow) vs around them (DVC)
            "in_process_overhead_s": round(in_process - compute, 1), "dvc_overhead_s": round(wall - in_process, 1),
            "stages": stages, "processes": processes}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "overhead.json"))
    ap.add_argument("--modes", nargs="+", default=["per-stage", "shared"])
    args = ap.parse_args()
    rows = []
    for mode in args.modes:
        r = run_once(shared_ray=(mode == "shared"))
        print(json.dumps({k: v for k, v in r.items() if k != "stages"}), flush=True)
        rows.append(r)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": f"{cpu}, {os.cpu_count()} cores", "runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
