#!/usr/bin/env bash
# Start (or stop) the local UIs: Prefect server + the served pipeline deployment, and the MLflow UI.
#   bash infra/local/ui.sh start [PREFECT_PORT] [MLFLOW_PORT]     bash infra/local/ui.sh stop
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="$ROOT/.venv/bin"
RUN="$ROOT/.prefect/run"
export PREFECT_HOME="${PREFECT_HOME:-$ROOT/.prefect}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_SERVER_UI_V2_ENABLED=false DO_NOT_TRACK=true
export MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1 RAY_USAGE_STATS_ENABLED=0
export PATH="$BIN:$PATH"
mkdir -p "$RUN" "$ROOT/mlflow"
cd "$ROOT"

started() {  # pid -> its start time in clock ticks since boot (field 22 of /proc/<pid>/stat), empty if gone
  [ -r "/proc/$1/stat" ] && sed -E 's/^.*\) //' "/proc/$1/stat" | cut -d' ' -f20
}

record() {  # pid name: the pid file holds the pid and its start time, so a reused pid is never taken for ours
  echo "$1 $(started "$1")" >"$RUN/$2.pid"
}

label() {  # pid-file name -> what a person calls it
  case "$1" in
    serve) echo "the served deployment" ;; prefect) echo "the Prefect server" ;; mlflow) echo "the MLflow UI" ;;
    *) echo "$1" ;;
  esac
}

stop() {
  # The flow-serving process goes first: with the server gone it may ignore SIGTERM.
  for name in serve prefect mlflow; do
    if [ -f "$RUN/$name.pid" ]; then
      read -r pid since <"$RUN/$name.pid" || true
      if [ -z "${pid:-}" ] || [ -z "${since:-}" ] || [ "$(started "$pid")" != "$since" ]; then
        echo "$name: not running (stale pid file $RUN/$name.pid)"
        rm -f "$RUN/$name.pid"
        continue
      fi
      echo "stopping $(label "$name") (pid $pid) ..."
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -KILL -- "-$pid" 2>/dev/null || true
      rm -f "$RUN/$name.pid"
    fi
  done
  echo "stopped"
}

wait_for() {  # url, what
  for _ in $(seq 120); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "error: $2 did not come up at $1 (logs in $RUN)"; exit 1
}

start() {
  local pport="${1:-4200}" mport="${2:-5000}"
  echo "starting the Prefect server on :$pport and the MLflow UI on :$mport ..."
  # The UI's own API address (else it derives one from port 4200 or an outside PREFECT_API_URL).
  PREFECT_UI_API_URL="http://127.0.0.1:$pport/api" \
    setsid "$BIN/prefect" server start --host 127.0.0.1 --port "$pport" </dev/null >"$RUN/prefect.log" 2>&1 &
  record $! prefect
  setsid "$BIN/mlflow" ui --host 127.0.0.1 --port "$mport" --workers 1 \
    --backend-store-uri "sqlite:///$ROOT/mlflow/mlflow.db" \
    --default-artifact-root "$ROOT/mlflow/artifacts" </dev/null >"$RUN/mlflow.log" 2>&1 &
  record $! mlflow
  echo "waiting for the Prefect server (its database is set up on first start) ..."
  wait_for "http://127.0.0.1:$pport/api/health" "Prefect server"
  export PREFECT_API_URL="http://127.0.0.1:$pport/api"
  echo "serving the pipeline deployment ssl-pipeline/default ..."
  setsid "$BIN/python" -m flows.deploy --name default </dev/null >"$RUN/serve.log" 2>&1 &
  record $! serve
  echo "waiting for the MLflow UI ..."
  wait_for "http://127.0.0.1:$mport/health" "MLflow UI"
  echo "looking up the latest comparison in MLflow ..."
  local runs compare lookup base="http://127.0.0.1:$mport"
  # The runs table: MLflow 3.17 opens a bare #/experiments/<id> on its GenAI overview, whatever the kind tag says.
  "$BIN/ssl-tasks" ui-link --experiment --base "$base" >"$RUN/runs-link.txt" 2>/dev/null &
  lookup=$!
  compare=$("$BIN/ssl-tasks" ui-link --base "$base" 2>&1 | tail -n 1) || true
  if wait "$lookup"; then runs=$(tail -n 1 "$RUN/runs-link.txt"); else runs="$base/#/experiments   (no runs yet)"; fi
  cat <<MSG
Prefect UI : http://127.0.0.1:$pport   (Deployments -> ssl-pipeline/default -> Run -> Custom run)
MLflow UI  : $runs   (experiment "ssl-tasks"; parent runs expand to children)
Comparison : $compare
Logs       : $RUN/*.log        Stop with: make ui-stop
MSG
}

case "${1:-start}" in
  start) shift || true; start "$@" ;;
  stop) stop ;;
  *) echo "usage: $0 start [PREFECT_PORT] [MLFLOW_PORT] | stop"; exit 2 ;;
esac
