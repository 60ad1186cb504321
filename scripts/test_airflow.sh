#!/usr/bin/env bash
# End-to-end test of the Airflow DAG (scripts/airflow/mfspark_nightly.py), for real:
#   1. Airflow 3 + the Spark provider in their own virtualenv ($AIRFLOW_VENV, default out/airflow-venv;
#      never the project's .venv), versions pinned by scripts/airflow/constraints.txt;
#   2. dist/mfspark.zip (scripts/build_pyfiles.sh), a throw-away AIRFLOW_HOME with a SQLite database,
#      the `spark_default` connection pointing at the local standalone master;
#   3. scripts/local_cluster.sh start (master + 2 workers);
#   4. `airflow dags test mfspark_nightly <date>` on ml-latest-small;
#   5. checks: the task succeeded, OUT/runs/<date>/ has non-empty recommendations Parquet and
#      OUT/latest names that run;
#   6. stops the cluster it started and removes its temporary files (trap), also on failure.
# Exits non-zero on any failure.
#
# Environment: PYTHON (the project's Python, default .venv/bin/python), AIRFLOW_VENV, AIRFLOW_PYTHON
# (creates the Airflow venv, default python3), MFSPARK_DATA_DIR (default ../shared/data/movielens),
# MASTER_PORT / MASTER_UI_PORT (default 7077 / 18080), LOGICAL_DATE (default 2026-01-02).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
started=$(date +%s)
say() { echo "test_airflow [$(( $(date +%s) - started )) s]: $*"; }
fail() { echo "test_airflow: FAILED: $*" >&2; exit 1; }

PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
PY=$(command -v "$PY")
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")  # absolute, without resolving the venv's symlink
AIRFLOW_VENV=${AIRFLOW_VENV:-$ROOT/out/airflow-venv}
DATA_DIR=${MFSPARK_DATA_DIR:-$(cd .. && pwd)/shared/data/movielens}
DATE=${LOGICAL_DATE:-2026-01-02}
RUN_ID=${DATE//-/}
[ -f "$DATA_DIR/ml-latest-small/ratings.csv" ] || fail "ml-latest-small not found in $DATA_DIR (set MFSPARK_DATA_DIR)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mfspark-airflow.XXXXXX")
export MFSPARK_CLUSTER_DIR=$WORK/cluster MASTER_PORT=${MASTER_PORT:-7077} MASTER_UI_PORT=${MASTER_UI_PORT:-18080}
export PYTHON=$PY
cleanup() {
  local status=$?
  scripts/local_cluster.sh stop >/dev/null || true
  if [ "$status" -ne 0 ]; then
    # Keep the evidence: the task's log and the cluster's logs.
    find "$WORK/airflow/logs" -name '*.log' -exec tail -n 40 {} + 2>/dev/null | tail -n 80 >&2 || true
    echo "test_airflow: logs kept in $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. Airflow in its own virtualenv. The constraints file pins the whole resolved set (Airflow's
#    own published constraints are not on PyPI), so every machine gets the same versions.
if [ ! -x "$AIRFLOW_VENV/bin/python" ]; then
  say "creating $AIRFLOW_VENV"
  "${AIRFLOW_PYTHON:-python3}" -m venv "$AIRFLOW_VENV"
fi
stamp=$AIRFLOW_VENV/.mfspark-constraints  # the constraints it was installed with: skip pip when unchanged
if ! cmp -s scripts/airflow/constraints.txt "$stamp"; then
  say "installing Airflow (scripts/airflow/constraints.txt)"
  "$AIRFLOW_VENV/bin/pip" install -q -c scripts/airflow/constraints.txt apache-airflow apache-airflow-providers-apache-spark
  cp scripts/airflow/constraints.txt "$stamp"
fi
AIRFLOW=$AIRFLOW_VENV/bin/airflow
say "$("$AIRFLOW" version 2>/dev/null | tail -n 1)"

# 2. The package zip, Airflow's home, the Spark connection, spark-submit on PATH.
scripts/build_pyfiles.sh dist/mfspark.zip
export AIRFLOW_HOME=$WORK/airflow
export AIRFLOW__CORE__DAGS_FOLDER=$ROOT/scripts/airflow
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW_CONN_SPARK_DEFAULT="spark://127.0.0.1:$MASTER_PORT?deploy-mode=client"
SPARK_HOME=$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
export SPARK_HOME
# The provider runs `spark-submit` from PATH only: put the project's there, and nothing else of its venv.
mkdir -p "$WORK/bin"
ln -s "$SPARK_HOME/bin/spark-submit" "$WORK/bin/spark-submit"
export PATH=$WORK/bin:$PATH
export MFSPARK_HOME=$ROOT MFSPARK_PYTHON=$PY MFSPARK_DATA_DIR=$DATA_DIR MFSPARK_OUT=$WORK/out
export MFSPARK_RETRIES=0  # a failure here should fail the test now, not after the DAG's retry delays
"$AIRFLOW" db migrate >"$WORK/db-migrate.log" 2>&1 || { tail -n 20 "$WORK/db-migrate.log" >&2; fail "airflow db migrate"; }
# The DAG file imports cleanly and says what the issue asks: nightly, no overlap, retries, the run id.
"$AIRFLOW_VENV/bin/python" - "$ROOT/scripts/airflow" <<'PYEOF' || fail "the DAG's definition"
import sys

from airflow.dag_processing.dagbag import DagBag

bag = DagBag(sys.argv[1])
assert not bag.import_errors, bag.import_errors
dag = bag.dags["mfspark_nightly"]
task = dag.get_task("pipeline")
assert dag.max_active_runs == 1 and not dag.catchup, (dag.max_active_runs, dag.catchup)
assert task.application.endswith("jobs/pipeline.py") and task.py_files.endswith("dist/mfspark.zip")
assert task.env_vars["MFSPARK_RUN_ID"] == "{{ ds_nodash }}", task.env_vars
print(f"DAG ok: {dag.dag_id}, {task.retries} retries here, max_active_runs 1")
PYEOF

# 3. The cluster.
say "starting the cluster on port $MASTER_PORT"
scripts/local_cluster.sh start

# 4. One run of the DAG, end to end.
say "airflow dags test mfspark_nightly $DATE"
"$AIRFLOW" dags test mfspark_nightly "$DATE" >"$WORK/dags-test.log" 2>&1 \
  || { tail -n 60 "$WORK/dags-test.log" >&2; fail "airflow dags test exited non-zero"; }
grep -q "Spark-Submit cmd" "$WORK/dags-test.log" || fail "the task never ran spark-submit (see $WORK/dags-test.log)"

# 5. The run's outputs.
"$PY" - "$WORK/out" "$RUN_ID" <<'PYEOF' || fail "outputs"
import sys
from pathlib import Path

import pyarrow.parquet as pq

out, run_id = Path(sys.argv[1]), sys.argv[2]
run = out / "runs" / run_id
latest = out / "latest"
runs = sorted(p.name for p in (out / "runs").glob("*"))
assert run.is_dir(), f"{run} missing: the pipeline did not name its run by MFSPARK_RUN_ID (runs: {runs})"
# `latest` is a link to the run, or a pointer file naming it.
named = latest.resolve() if latest.is_symlink() else (out / latest.read_text().strip()).resolve()
assert named == run.resolve() or named.name == run_id, f"latest -> {named}, expected {run}"
recs = run / "recommend"
assert any(recs.rglob("_SUCCESS")), f"no _SUCCESS under {recs}"
rows = sum(pq.ParquetFile(f).metadata.num_rows for f in recs.rglob("*.parquet"))
assert rows > 0, f"{recs} holds no rows"
print(f"outputs ok: {run} ({rows} recommendation rows), latest -> {named.name}")
PYEOF
say "passed"
