#!/usr/bin/env bash
# A Spark standalone cluster on 127.0.0.1 from the installed pyspark: one master, two workers.
#
# Usage: scripts/local_cluster.sh start|stop|status
#   MFSPARK_CLUSTER_DIR   where pids and logs go (default: out/cluster)
#   WORKER_CORES / WORKER_MEMORY   per worker (default 1 core, 2g)
#   MASTER_PORT / MASTER_UI_PORT   (default 7077 / 18080)
#
# The pip package ships `bin/spark-class` but not `sbin/start-master.sh`, so the daemons are
# started with spark-class directly (see shared/NOTES.md). `start` records each pid, then
# waits until both workers are registered (the master's JSON status page lists them);
# `stop` kills exactly the recorded pids, never "every java process".
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
SPARK_HOME=$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
export SPARK_HOME
STATE=${MFSPARK_CLUSTER_DIR:-out/cluster}
HOST=127.0.0.1
PORT=${MASTER_PORT:-7077}
UI_PORT=${MASTER_UI_PORT:-18080}
MASTER_URL="spark://$HOST:$PORT"
WORKERS=(worker-1 worker-2)

alive() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

launch() {  # name, class, args...
  local name=$1; shift
  if alive "$name"; then echo "$name already running (pid $(cat "$STATE/$name.pid"))"; return; fi
  nohup "$SPARK_HOME/bin/spark-class" "$@" >"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
}

registered_workers() {
  "$PY" - "$HOST" "$UI_PORT" <<'EOF' 2>/dev/null || echo 0
import json, sys, urllib.request
status = json.load(urllib.request.urlopen(f"http://{sys.argv[1]}:{sys.argv[2]}/json/", timeout=2))
print(sum(1 for w in status.get("workers", []) if w.get("state") == "ALIVE"))
EOF
}

start() {
  mkdir -p "$STATE"
  launch master org.apache.spark.deploy.master.Master --host "$HOST" --port "$PORT" --webui-port "$UI_PORT"
  for i in "${!WORKERS[@]}"; do
    launch "${WORKERS[$i]}" org.apache.spark.deploy.worker.Worker --host "$HOST" \
      --webui-port $((UI_PORT + 1 + i)) --cores "${WORKER_CORES:-1}" --memory "${WORKER_MEMORY:-2g}" \
      --work-dir "$STATE/${WORKERS[$i]}-work" "$MASTER_URL"
  done
  for _ in $(seq 1 90); do
    if [ "$(registered_workers)" -ge "${#WORKERS[@]}" ]; then
      echo "cluster up: $MASTER_URL, ${#WORKERS[@]} workers (ui http://$HOST:$UI_PORT, state $STATE)"
      return 0
    fi
    for name in master "${WORKERS[@]}"; do
      alive "$name" || { echo "local_cluster: $name exited; see $STATE/$name.log" >&2; stop; return 1; }
    done
    sleep 1
  done
  echo "local_cluster: workers did not register within 90 s; see $STATE/*.log" >&2
  stop
  return 1
}

stop() {
  for name in "${WORKERS[@]}" master; do
    if alive "$name"; then
      kill "$(cat "$STATE/$name.pid")" 2>/dev/null || true
      for _ in $(seq 1 20); do alive "$name" || break; sleep 0.5; done
      alive "$name" && kill -9 "$(cat "$STATE/$name.pid")" 2>/dev/null || true
      echo "stopped $name"
    fi
    rm -f "$STATE/$name.pid"
  done
}

status() {
  local up=0
  for name in master "${WORKERS[@]}"; do
    if alive "$name"; then echo "$name: running (pid $(cat "$STATE/$name.pid"))"; up=$((up + 1))
    else echo "$name: stopped"; fi
  done
  echo "registered workers: $(registered_workers)"
  [ "$up" -eq $((1 + ${#WORKERS[@]})) ]
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
