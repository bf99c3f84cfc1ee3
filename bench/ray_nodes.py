"""Wall time of one small pretraining run with 2 Ray workers: one node (2 CPUs) vs two nodes (1 CPU each).

Both setups are real clusters started with ``ray start`` on this machine (tests/local_ray_cluster.py): the
head alone with 2 CPUs, or a 1-CPU head plus a 1-CPU worker node, so the 2 workers (1 CPU each) share one
raylet or are spread over two. Each repetition is a fresh driver process that joins through ``address=`` and
calls ``ssl_tasks.training.ray_runner.fit`` on sklearn digits (SimCLR, small_cnn): the same code path as
``ssl-tasks pretrain`` with ``RAY_ADDRESS`` set. Recorded per run: the driver's wall time (imports, connect,
worker-group start, training, teardown), ``fit()`` alone, and the summed epoch times (compute).

Both setups have the same 2 cores, so a second node cannot speed anything up here: the difference is the
cost of a second raylet and of gloo between nodes, i.e. overhead, not speed-up.

    python bench/ray_nodes.py --reps 3 --epochs 3 --out bench/results/ray_nodes.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import machine_line, provenance  # bench/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the cluster helper the two-node tests use

SETUPS = {"1 node": [2], "2 nodes": [1, 1]}  # CPUs per node, head first


def driver(args: argparse.Namespace) -> None:
    """One run, in its own process: join the cluster, train, print a JSON line."""
    t0 = time.perf_counter()
    from ssl_tasks.modalities.image.feed import channel_stats
    from ssl_tasks.modalities.image.shards import ImageDataset
    from ssl_tasks.training.config import TrainConfig, TrainJob, objective_config
    from ssl_tasks.training.ray_runner import fit

    mean, std = channel_stats(ImageDataset(Path(args.data)))
    job = TrainJob(run="simclr-bench", seed=0, data_dir=args.data, objective="simclr",
                   objective_config=objective_config("simclr", {"temperature": 0.2}),
                   encoder="small_cnn", encoder_kwargs={"width": args.width},
                   train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, warmup_epochs=0, num_workers=2,
                                     max_failures=0), mean=mean, std=std)
    t_fit = time.perf_counter()
    state = fit(job, storage_dir=Path(args.storage), name=args.name, address=args.address)
    fit_s = time.perf_counter() - t_fit
    history = json.loads(state["history"])
    print("RESULT " + json.dumps({"fit_s": fit_s, "driver_in_process_s": time.perf_counter() - t0,
                                  "compute_s": sum(h["train/epoch_time_s"] for h in history),
                                  "epochs": len(history), "final_loss": history[-1]["train/loss"]}), flush=True)


def run_once(label: str, address: str, rep: int, data: Path, work: Path, args: argparse.Namespace) -> dict:
    name = f"{label.replace(' ', '')}-{rep}"
    cmd = [sys.executable, __file__, "--driver", "--address", address, "--data", str(data), "--storage",
           str(work / "ray"), "--name", name, "--epochs", str(args.epochs), "--width", str(args.width),
           "--batch-size", str(args.batch_size)]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    load = os.getloadavg()[0]  # the machine is shared: how busy it was when this run started
    t = time.perf_counter()
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=900)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"{label} rep {rep} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("RESULT "))
    r = {"rep": rep, "wall_s": round(wall, 2), "loadavg_1m_at_start": round(load, 2),
         **{k: round(v, 3) if isinstance(v, float) else v for k, v in json.loads(line[7:]).items()}}
    print(f"{label} rep {rep}: {json.dumps(r)}", flush=True)
    return r


def run_all(reps: int, data: Path, work: Path, args: argparse.Namespace) -> list[dict]:
    """Both clusters up at once (the idle one's background load hits both alike), repetitions alternated."""
    from local_ray_cluster import LocalRayCluster

    clusters, rows = {}, []
    try:
        for label, cpus in SETUPS.items():
            t0 = time.perf_counter()
            c = clusters[label] = LocalRayCluster(head_cpus=cpus[0])
            for i, n in enumerate(cpus[1:], 1):
                c.add_node(num_cpus=n, name=f"node{i}")
            rows.append({"setup": label, "nodes": len(cpus), "cpus_per_node": cpus, "workers": 2,
                         "cpus_per_worker": 1, "cluster_start_s": round(time.perf_counter() - t0, 1), "runs": []})
        for rep in range(reps):
            for row in rows:
                row["runs"].append(run_once(row["setup"], clusters[row["setup"]].address, rep, data, work, args))
    finally:
        for c in clusters.values():
            c.shutdown()
    return rows


def table(rows: list[dict]) -> str:
    def med(r: dict, k: str) -> str:
        vals = [x[k] for x in r["runs"]]
        return f"{statistics.median(vals):.1f} ({min(vals):.1f}–{max(vals):.1f})"

    head = ("| setup | CPUs per node | cluster start s | run wall s, median (min–max) | fit() s | "
            "compute s (sum of epochs) |")
    lines = [head, "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setup']} | {' + '.join(map(str, r['cpus_per_node']))} | {r['cluster_start_s']} | "
                     f"{med(r, 'wall_s')} | {med(r, 'fit_s')} | {med(r, 'compute_s')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "ray_nodes.json"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)
    for a in ("--address", "--data", "--storage", "--name"):
        ap.add_argument(a, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.driver:
        return driver(args)

    from ssl_tasks.data.ingest import ingest

    work = Path(tempfile.mkdtemp(prefix="bench-raynodes-"))
    try:
        data = work / "digits"
        ingest("sklearn_digits", None, data, test_fraction=0.2, split_seed=0)
        rows = run_all(args.reps, data, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = {"machine": machine_line(), "provenance": provenance(args), "run": {"data": "sklearn_digits (1437 train images)",
           "objective": "simclr", "encoder": f"small_cnn width {args.width}", "epochs": args.epochs,
           "batch_size_per_worker": args.batch_size, "workers": 2},
           "note": "both setups share the same 2 cores: the 2-node figure is overhead, not speed-up",
           "setups": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
