"""Default pipeline wall time split into compute and orchestration overhead.

Runs `dvc repro` of the default pipeline in a fresh copy of the project, once with each stage
starting its own local Ray, and once with one Ray cluster shared by all stages of the run
(`ray start --head` + RAY_ADDRESS, what `make run` does). The stages are timed from outside the library:
`ssl-tasks` on the copy's PATH is a stand-in (`SHIM`) that runs the real CLI in the same process after wrapping
the stages' work in timers (training epochs, from the history each fit returns; evaluation protocols; baselines;
tokenizers; ingest; validation), and logs that compute and the process's wall time. Overhead is wall time minus
compute: process start-up and imports, DVC hashing, Ray start-up, MLflow logging.

    python bench/overhead.py --out bench/results/overhead.json

`--modes floor` measures the fixed costs the pipeline's shape implies with no work at all: `dvc repro` of as
many no-op stages as the default pipeline has, one Python process importing what a stage imports, and one
pretrain stage's Ray (local `ray.init`, a `TorchTrainer.fit` whose loop only reports, shutdown). The default
pipeline's overhead cannot fall below dvc + stages x imports + pretrain stages x Ray without changing its
shape, so the compute a run needs for a given overhead share follows from these figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import machine_line, provenance  # bench/ is on sys.path when run as a script

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


SHIM = r'''#!{python}
"""bench/overhead.py's ssl-tasks: the real CLI in this process, its stages' compute timed from outside the library."""
import atexit, functools, json, os, sys, time

LOG, records, depth = {log!r}, [], [0]
argv = sys.argv[1:]
target = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--dataset", "--run")), "")
command = next((a for a in argv if a in ("ingest", "validate", "tokenizer", "baselines", "pretrain", "evaluate",
                                          "compare", "list", "ui-link")), "?")
stage = f"{{command}}@{{target}}".rstrip("@")


def timed(owner, attr, seconds=None):
    """Time ``owner.attr`` (outermost call only: a subclass's method calling its base's counts once)."""
    fn = getattr(owner, attr)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        depth[0] += 1
        t0 = time.perf_counter()
        try:
            out = fn(*args, **kwargs)
        finally:
            depth[0] -= 1
        if depth[0] == 0:
            s = seconds(out) if seconds else time.perf_counter() - t0
            records.append({{"stage": f"{{stage}}:{{attr}}", "compute_s": round(s, 3)}})
        return out

    setattr(owner, attr, wrapper)


import ssl_tasks.pipeline.ingest as ingest_stage
import ssl_tasks.pipeline.pretrain as pretrain_stage
import ssl_tasks.validation as validation
from ssl_tasks.core.modality import _registered
from ssl_tasks.pipeline.cli import main

timed(ingest_stage, "ingest_source")
timed(validation, "validate_dataset")
# a pretrain seed's compute is its training epochs, as the loop measured them (not Ray's start-up around them)
timed(pretrain_stage, "_fit", lambda state: sum(r["train/epoch_time_s"] for r in json.loads(state["history"])))
registry = _registered()
for name in list(registry):
    cls = registry.get(name)
    for attr in ("train_tokenizer", "evaluate", "run_baseline"):
        if attr in vars(cls):
            timed(cls, attr)
code = main(argv)
try:
    import psutil

    process_s = time.time() - psutil.Process().create_time()
except Exception:  # psutil is optional: the figure is then a little short (imports before the clock started)
    process_s = time.perf_counter()
if code == 0:
    with open(LOG, "a", encoding="utf-8") as f:
        for r in [*records, {{"process": stage, "process_s": round(process_s, 3)}}]:
            f.write(json.dumps(r) + "\n")
atexit._run_exitfuncs()  # then skip the interpreter's teardown, as ssl_tasks.pipeline.cli.entry does
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
'''


def install_shim(log: Path) -> Path:
    """A bin folder whose ``ssl-tasks`` is ``SHIM`` (put first on the PATH of ``dvc repro``)."""
    bin_dir = Path(tempfile.mkdtemp(prefix="bench-shim-"))
    shim = bin_dir / "ssl-tasks"
    shim.write_text(SHIM.format(python=sys.executable, log=str(log)))
    shim.chmod(0o755)
    return bin_dir


def run_once(shared_ray: bool) -> dict:
    root = fresh_copy(Path(tempfile.mkdtemp(prefix="bench-overhead-")))
    log, shim_bin = root / "timing.jsonl", install_shim(root / "timing.jsonl")
    env = {**os.environ, "PATH": f"{shim_bin}:{BIN}:{os.environ['PATH']}"}
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
    shutil.rmtree(shim_bin, ignore_errors=True)
    return {"shared_ray_cluster": shared_ray, "wall_s": round(wall, 1), "compute_s": round(compute, 1),
            "overhead_s": round(wall - compute, 1), "overhead_fraction": round((wall - compute) / wall, 3),
            # where the overhead goes: inside the stage processes (imports, Ray start, MLflow) vs around them (DVC)
            "in_process_overhead_s": round(in_process - compute, 1), "dvc_overhead_s": round(wall - in_process, 1),
            "stages": stages, "processes": processes}


FIT_NOOP = """
import os, tempfile, time
t0 = time.perf_counter()
from ssl_tasks.training.ray_runner import init_ray
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
import ray
t1 = time.perf_counter()
init_ray()
t2 = time.perf_counter()
def loop(cfg):
    import ray.train
    ray.train.report({"x": 1.0})
TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": os.cpu_count()}),
             run_config=RunConfig(name="noop", storage_path=tempfile.mkdtemp())).fit()
t3 = time.perf_counter()
ray.shutdown()
print(t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3)
"""


def floor(n_stages: int, n_pretrain: int, repeats: int = 3) -> dict:
    """Fixed costs with no work: DVC per stage, a stage process's imports, Ray per pretrain stage (medians)."""
    import statistics

    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)

    def timed(cmd: list[str], cwd: Path | None = None) -> tuple[float, str]:
        t0 = time.perf_counter()
        res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=True)
        return time.perf_counter() - t0, res.stdout

    stage_imports = (
        "import ssl_tasks.pipeline.pretrain, ssl_tasks.pipeline.evaluate, ssl_tasks.tracking.mlflow_tracking, "
        "ssl_tasks.pipeline.cli"
    )
    imports = [timed([sys.executable, "-c", stage_imports])[0] for _ in range(repeats)]
    dvc = []
    for _ in range(repeats):
        root = Path(tempfile.mkdtemp(prefix="bench-dvc-floor-"))
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
        subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=root, env=env, check=True)
        stages = {f"s{i}": {"cmd": f"mkdir -p out{i} && echo {i} > out{i}/x", "deps": [f"out{i - 1}"] if i else [],
                            "outs": [f"out{i}"]} for i in range(n_stages)}
        (root / "dvc.yaml").write_text(json.dumps({"stages": stages}))  # JSON is YAML
        dvc.append(timed([str(BIN / "dvc"), "repro"], cwd=root)[0])
        shutil.rmtree(root, ignore_errors=True)
    ray_parts = [[float(x) for x in timed([sys.executable, "-c", FIT_NOOP], cwd=REPO)[1].split()[-4:]]
                 for _ in range(repeats)]
    ray_total = [sum(r[1:]) for r in ray_parts]
    med = statistics.median
    out = {"stages": n_stages, "pretrain_stages": n_pretrain, "repeats": repeats,
           "dvc_repro_s": round(med(dvc), 2), "dvc_per_stage_s": round(med(dvc) / n_stages, 2),
           "stage_imports_s": round(med(imports), 2),
           "ray_per_pretrain_stage_s": round(med(ray_total), 2),
           "ray_parts_s": {k: round(med(r[i] for r in ray_parts), 2)
                           for i, k in enumerate(["ray_imports", "ray_init", "fit_noop", "shutdown"])}}
    total = med(dvc) + n_stages * med(imports) + n_pretrain * med(ray_total)
    warm = med(dvc) + med(imports) + med(ray_total)  # one warm process for every stage, one Ray start
    out.update({"floor_s": round(total, 1), "floor_one_warm_process_s": round(warm, 1),
                "compute_needed_for_10pct_s": round(9 * total, 0),
                "compute_needed_for_10pct_one_warm_process_s": round(9 * warm, 0)})
    return out


ONE_FIT = """
import json, os, sys, tempfile, time
from pathlib import Path
t0 = time.perf_counter()
from ssl_tasks.pipeline.params import load_params
from ssl_tasks.pipeline.layout import Layout
from ssl_tasks.pipeline.pretrain import train_job
from ssl_tasks.data.ingest import ingest
from ssl_tasks.modalities.image.feed import channel_stats
from ssl_tasks.modalities.image.shards import ImageDataset
from ssl_tasks.training.config import job_to_dict
from ssl_tasks.training.ray_runner import init_ray
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
import ray
work = Path(tempfile.mkdtemp(prefix="bench-one-fit-"))
params, layout = load_params(Path("params.yaml")), Layout(work)
d = params.dataset("digits")
ingest(d.source, d.path, layout.data("digits"), test_fraction=d.test_fraction, split_seed=d.split_seed)
mean, std = channel_stats(ImageDataset(layout.data("digits")))
jobs = [job_to_dict(train_job(params, r, params.seed, layout, layout.data("digits"), mean, std)) for r in params.runs]
t1 = time.perf_counter()
init_ray()
t2 = time.perf_counter()
def loop(cfg):
    import time, torch
    from pathlib import Path
    from ssl_tasks.training.config import job_from_dict
    from ssl_tasks.training.loop import LocalSession, run_training
    torch.set_num_threads(os.cpu_count())
    out = []
    for j in cfg["jobs"]:
        s = time.perf_counter()
        session = LocalSession(Path(cfg["work"]) / ("ckpt-" + j["run"]))
        run_training(job_from_dict(j), session)
        out.append({"run": j["run"], "job_s": time.perf_counter() - s,
                    "epochs_s": sum(r["train/epoch_time_s"] for r in session.reports)})
    (Path(cfg["work"]) / "jobs.json").write_text(json.dumps(out))
TorchTrainer(loop, train_loop_config={"jobs": jobs, "work": str(work)},
             scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": os.cpu_count()}),
             run_config=RunConfig(name="one-fit", storage_path=str(work / "ray"))).fit()
t3 = time.perf_counter()
ray.shutdown()
t4 = time.perf_counter()
print(json.dumps({"imports_and_setup_s": t1 - t0, "ray_init_s": t2 - t1, "fit_s": t3 - t2, "shutdown_s": t4 - t3,
                  "jobs": json.loads((work / "jobs.json").read_text())}))
"""


def one_fit() -> dict:
    """Prototype of the warm design's Ray part: the default pipeline's pretrain jobs back to back in ONE ``fit``.

    Same jobs as the pretrain stages (params.yaml), one worker, a per-job local checkpoint dir; no MLflow. What
    it measures is how much of a ``fit`` is start-up when it is paid once for every pretrain job of a run.
    """
    env = {**os.environ}
    env.pop("RAY_ADDRESS", None)
    res = subprocess.run([sys.executable, "-c", ONE_FIT], cwd=REPO, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(res.stderr[-4000:])
    r = json.loads(res.stdout.strip().splitlines()[-1])
    epochs = sum(j["epochs_s"] for j in r["jobs"])
    r.update({"epochs_total_s": round(epochs, 1),
              "fit_overhead_s": round(r["fit_s"] - epochs, 1),
              "ray_overhead_s": round(r["ray_init_s"] + r["fit_s"] - epochs + r["shutdown_s"], 1)})
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "overhead.json"))
    ap.add_argument("--modes", nargs="+", default=["per-stage", "shared", "floor"],
                    choices=["per-stage", "shared", "floor", "one-fit"])
    ap.add_argument("--floor-stages", type=int, default=11, help="stage count of the default pipeline")
    ap.add_argument("--floor-pretrain", type=int, default=3, help="pretrain stages of the default pipeline")
    args = ap.parse_args()
    rows = []
    for mode in args.modes:
        if mode == "floor":
            r = {"floor": floor(args.floor_stages, args.floor_pretrain)}
        elif mode == "one-fit":
            r = {"one_fit": one_fit()}
        else:
            r = run_once(shared_ray=(mode == "shared"))
        print(json.dumps({k: v for k, v in r.items() if k != "stages"}), flush=True)
        rows.append(r)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine_line(), "provenance": provenance(args), "runs": rows},
                                         indent=2) + "\n")


if __name__ == "__main__":
    main()
