#!/usr/bin/env bash
# GPU check (issue 21): on a machine with a CUDA GPU, run the default pipeline (params.yaml) with
#   train.use_gpu: true, train.precision: bf16
# in the workspace workspaces/gpu-check, then record per run the pretraining throughput (samples/s, median over
# the epochs after the first) and the worker's peak GPU memory into bench/results/gpu_check.json, with the
# device, commit and the leaderboard beside them (a fast run that learned nothing is no result).
#
#   bash bench/gpu_check.sh            # ~5 min with the install on a fresh machine, ~2 min without
#
# Then copy the printed table into bench/RESULTS.md (section "GPU check"), naming the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v nvidia-smi >/dev/null && nvidia-smi -L || { echo "error: no NVIDIA GPU here (nvidia-smi not found)"; exit 2; }
make install
.venv/bin/python - <<'EOF'
import torch
if not torch.cuda.is_available():
    raise SystemExit("error: torch sees no CUDA device (torch.cuda.is_available() is False)")
EOF

export DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 \
       RAY_USAGE_STATS_ENABLED=0
start=$(date +%s)
.venv/bin/python -c "
from flows.pipeline import ssl_pipeline
ssl_pipeline(overrides={'train.use_gpu': True, 'train.precision': 'bf16'}, workspace='gpu-check')
"
wall=$(( $(date +%s) - start ))

.venv/bin/python - "$wall" <<'EOF'
import json, platform, statistics, subprocess, sys
from pathlib import Path

import pandas as pd
import torch

ws = Path("workspaces/gpu-check")
runs = {}
for hist in sorted(ws.glob("artifacts/runs/*/pretrain/seed-*/history.json")):
    rows = json.loads(hist.read_text())
    rows = rows["history"] if isinstance(rows, dict) else rows
    speed = [r["train/samples_per_s"] for r in rows[1:]] or [rows[0]["train/samples_per_s"]]
    runs[hist.parts[-4]] = {"samples_per_s": round(statistics.median(speed), 1),
                            "peak_memory_gib": round(max(r.get("train/peak_memory_gib", float("nan")) for r in rows), 3),
                            "epochs": len(rows)}
if not runs or any(r["peak_memory_gib"] != r["peak_memory_gib"] for r in runs.values()):
    raise SystemExit(f"error: no GPU figures in {ws} (did the runs train on the GPU?): {runs}")
board = pd.read_csv(ws / "artifacts" / "leaderboard.csv")
out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "host_cpus": __import__("os").cpu_count(),
       "python": platform.python_version(),
       "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
       "settings": {"train.use_gpu": True, "train.precision": "bf16", "params": "params.yaml"},
       "pipeline_wall_s": int(sys.argv[1]), "runs": runs,
       "leaderboard": board[[c for c in ("name", "knn/top1", "linear/top1") if c in board]].to_dict("records")}
Path("bench/results/gpu_check.json").write_text(json.dumps(out, indent=2) + "\n")
print(f"\nGPU check on {out['device']} (commit {out['commit']}), whole pipeline {out['pipeline_wall_s']} s:\n")
print("| run | samples/s | peak GPU memory (GiB) | k-NN top-1 |\n|---|---|---|---|")
knn = dict(zip(board["name"], board.get("knn/top1", [float("nan")] * len(board))))
for name, r in runs.items():
    print(f"| {name} | {r['samples_per_s']:.0f} | {r['peak_memory_gib']:.2f} | {knn.get(name, float('nan')):.4f} |")
print("\nwrote bench/results/gpu_check.json")
EOF
