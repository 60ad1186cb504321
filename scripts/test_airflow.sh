#!/usr/bin/env bash
# End-to-end test of the Airflow DAG (deploy/airflow/mfspark_nightly.py), for real, on each cluster it names:
#   scripts/test_airflow.sh [standalone] [yarn]      (no argument: both)
#   1. Airflow 3 + the Spark provider in their own virtualenv, never the project's .venv, versions pinned by
#      deploy/airflow/constraints.txt and cached by that file's hash: $AIRFLOW_VENV, default
#      ${XDG_CACHE_HOME:-~/.cache}/mfspark/airflow-venv-<sha256[:12]> (a changed file makes a new venv);
#   2. dist/mfspark.zip, a throw-away AIRFLOW_HOME with SQLite, the DAG's definition checked for each cluster;
#   3. per cluster: standalone = scripts/local_cluster.sh (master + 2 workers), input and ROOT on the local disk;
#      yarn = scripts/hadoop_local.sh (HDFS + YARN), the input put on HDFS, ROOT on HDFS, the pipeline in YARN
#      cluster mode;
#   4. `airflow dags test mfspark_nightly <date>` on ml-latest-small: the pipeline task, then the publish task;
#   5. checks that can fail, against the input read independently (pandas over ratings.csv): `mfspark runs ROOT
#      --latest` names ROOT/runs/<night>, publish printed that run's recommendations, every user of ratings.csv has
#      exactly TOP_N rows (ranks 1..N, distinct movies), no movie the user rated, users given the popularity list
#      (recommend/fallback_users) are the expected ones and the rest (the model's rows) are the majority;
#   6. stops what it started and removes its temporary files (trap), also on failure (then the logs are kept).
# Exits non-zero on any failure.
#
# Environment: PYTHON (the project's Python, default .venv/bin/python), AIRFLOW_VENV, AIRFLOW_PYTHON (creates the
# Airflow venv, default python3), MFSPARK_DATA_DIR (default ../shared/data/movielens), LOGICAL_DATE (default
# 2026-01-02), MASTER_PORT / MASTER_UI_PORT (standalone; default 7077 / 18080), HADOOP_LOCAL_PORT_OFFSET (yarn).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
started=$(date +%s)
step_started=$started
say() { echo "test_airflow [$(( $(date +%s) - started )) s]: $*"; }
step() {  # the seconds of the step that just ended, then the next step's name
  local now; now=$(date +%s)
  [ -z "${step_name:-}" ] || echo "test_airflow: step '$step_name' took $(( now - step_started )) s"
  step_name=$1 step_started=$now
  say "$1"
}
fail() { echo "test_airflow: FAILED: $*" >&2; exit 1; }

MODES=("$@")
[ ${#MODES[@]} -gt 0 ] || MODES=(standalone yarn)
for mode in "${MODES[@]}"; do
  case $mode in standalone|yarn) ;; *) echo "usage: $0 [standalone] [yarn]" >&2; exit 2 ;; esac
done

PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
PY=$(command -v "$PY")
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")  # absolute, without resolving the venv's symlink
CONSTRAINTS=deploy/airflow/constraints.txt
AIRFLOW_VENV=${AIRFLOW_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mfspark/airflow-venv-$(sha256sum "$CONSTRAINTS" | cut -c1-12)}
DATA_DIR=${MFSPARK_DATA_DIR:-$(cd .. && pwd)/shared/data/movielens}
RELEASE=$DATA_DIR/ml-latest-small
DATE=${LOGICAL_DATE:-2026-01-02}
RUN_ID=${DATE//-/}
TOP_N=10  # the pipeline's default list length
[ -f "$RELEASE/ratings.csv" ] || fail "ml-latest-small not found in $DATA_DIR (set MFSPARK_DATA_DIR)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mfspark-airflow.XXXXXX")
export MFSPARK_CLUSTER_DIR=$WORK/cluster MASTER_PORT=${MASTER_PORT:-7077} MASTER_UI_PORT=${MASTER_UI_PORT:-18080}
export PYTHON=$PY
HADOOP_LOCAL=$ROOT/scripts/hadoop_local.sh
export HADOOP_LOCAL_SERVICES="hdfs yarn"  # no S3 server: the yarn run reads and writes HDFS only
hadoop_started=0 hdfs_base=
cleanup() {
  local status=$?
  scripts/local_cluster.sh stop >/dev/null || true
  [ -z "$hdfs_base" ] || "$HADOOP_LOCAL" dfs -rm -r -f -skipTrash "$hdfs_base" >/dev/null 2>&1 || true
  [ "$hadoop_started" = 0 ] || "$HADOOP_LOCAL" stop >/dev/null 2>&1 || true
  if [ "$status" -ne 0 ]; then
    # Keep the evidence: the tasks' logs and the clusters' logs.
    find "$WORK/airflow/logs" -name '*.log' -exec tail -n 40 {} + 2>/dev/null | tail -n 80 >&2 || true
    echo "test_airflow: logs kept in $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. Airflow in its own virtualenv. The constraints file pins the whole resolved set (Airflow's own published
#    constraints are not on PyPI), so every machine gets the same versions; `.complete` is written only after pip
#    succeeded, so an interrupted install is redone from scratch instead of being trusted.
step "Airflow virtualenv $AIRFLOW_VENV"
if [ ! -f "$AIRFLOW_VENV/.complete" ]; then
  rm -rf "$AIRFLOW_VENV"
  mkdir -p "$(dirname "$AIRFLOW_VENV")"
  "${AIRFLOW_PYTHON:-python3}" -m venv "$AIRFLOW_VENV"
  "$AIRFLOW_VENV/bin/pip" install -q -c "$CONSTRAINTS" apache-airflow apache-airflow-providers-apache-spark
  touch "$AIRFLOW_VENV/.complete"
fi
AIRFLOW=$AIRFLOW_VENV/bin/airflow

# 2. The package zip, Airflow's home and database, spark-submit on PATH, the DAG's definition.
step "zip, Airflow database, DAG definition"
scripts/build_pyfiles.sh dist/mfspark.zip
export AIRFLOW_HOME=$WORK/airflow
export AIRFLOW__CORE__DAGS_FOLDER=$ROOT/deploy/airflow
export AIRFLOW__CORE__LOAD_EXAMPLES=False
SPARK_HOME=$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
export SPARK_HOME
# The provider runs `spark-submit` from PATH only: put the project's there, and nothing else of its venv.
mkdir -p "$WORK/bin"
ln -s "$SPARK_HOME/bin/spark-submit" "$WORK/bin/spark-submit"
export PATH=$WORK/bin:$PATH
export MFSPARK_HOME=$ROOT MFSPARK_PYTHON=$PY MFSPARK=$(dirname "$PY")/mfspark
export MFSPARK_RETRIES=0  # a failure here should fail the test now, not after the DAG's retry delays
"$AIRFLOW" db migrate >"$WORK/db-migrate.log" 2>&1 || { tail -n 20 "$WORK/db-migrate.log" >&2; fail "airflow db migrate"; }
# The DAG file imports cleanly for each cluster and says what the issues ask: nightly, no overlap, the run id,
# the cluster's connection and profile, publish after the pipeline.
"$AIRFLOW_VENV/bin/python" - "$ROOT/deploy/airflow" "${MODES[@]}" <<'PYEOF' || fail "the DAG's definition"
import logging
import os
import sys

from airflow.dag_processing.dagbag import DagBag

expected = {"standalone": ("spark_default", "cluster"), "yarn": ("spark_yarn", "yarn")}
for mode in sys.argv[2:]:
    os.environ["MFSPARK_CLUSTER"] = mode
    bag = DagBag(sys.argv[1])
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["mfspark_nightly"]
    task = dag.get_task("pipeline")
    assert dag.max_active_runs == 1 and not dag.catchup, (dag.max_active_runs, dag.catchup)
    assert task.application.endswith("jobs/pipeline.py") and task.py_files.endswith("dist/mfspark.zip")
    args = task.application_args
    assert args[args.index("--run-id") + 1] == "{{ ds_nodash }}", args
    assert (task._conn_id, dag.params["profile"]) == expected[mode], (task._conn_id, dag.params["profile"])
    assert dag.get_task("publish").upstream_task_ids == {"pipeline"}
    print(f"DAG ok ({mode}): {dag.dag_id}, {task._conn_id}, profile {dag.params['profile']}, max_active_runs 1")
os.environ["MFSPARK_CLUSTER"] = "mesos"
logging.disable(logging.CRITICAL)  # the refusal's traceback is expected here, not news
assert any("MFSPARK_CLUSTER='mesos'" in error for error in DagBag(sys.argv[1]).import_errors.values())
PYEOF

# check_run MODE ROOT: the run and its lists against ratings.csv read independently.
check_run() {
  local mode=$1 out=$2 log=$WORK/$1/dags-test.log latest published recs
  latest=$("$MFSPARK" runs "$out" --latest 2>>"$WORK/$mode/runs.log") \
    || fail "$mode: mfspark runs $out --latest (see $WORK/$mode/runs.log)"
  [ "$latest" = "$out/runs/$RUN_ID" ] || fail "$mode: mfspark runs --latest names $latest, not the DAG's run $RUN_ID"
  recs=$("$MFSPARK" runs "$latest" --latest --stage recommend 2>>"$WORK/$mode/runs.log")
  # The publish task's output lines are logged as "... [info ] LINE [airflow.task.hooks...SubprocessHook] ...";
  # its last line is the task's XCom.
  published=$(sed -n 's/.*\] \([^ ]*\/recommendations\) \[airflow\.task\.hooks\.[A-Za-z.]*SubprocessHook\].*/\1/p' "$log" \
    | tail -n 1)
  [ "$published" = "$recs/recommendations" ] || fail "$mode: publish printed '$published', expected $recs/recommendations"
  say "$mode: mfspark runs --latest -> $latest; publish -> $published"
  fetch "$recs" "$WORK/$mode/recommend"
  "$PY" - "$RELEASE/ratings.csv" "$WORK/$mode/recommend" "$TOP_N" <<'PYEOF' || fail "$mode: the lists"
import sys

import pandas as pd

ratings_csv, stage, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
ratings = pd.read_csv(ratings_csv, usecols=["userId", "movieId", "rating"]).rename(
    columns={"userId": "user_id", "movieId": "movie_id"})
recs = pd.read_parquet(f"{stage}/recommendations")
fallback = pd.read_parquet(f"{stage}/fallback_users")

users = set(ratings.user_id)
# Every user has far more than N movies they did not rate among the movies someone liked (>= 4), so each gets N.
liked = set(ratings.movie_id[ratings.rating >= 4])
rated = ratings.groupby("user_id").movie_id.agg(set)
assert min(len(liked - movies) for movies in rated) >= 5 * n, "precondition: a user with few unrated movies"
assert set(recs.user_id) == users, f"{len(set(recs.user_id))} users have lists, ratings.csv has {len(users)}"
per_user = recs.groupby("user_id").agg(rows=("movie_id", "size"), movies=("movie_id", "nunique"),
                                       ranks=("rank", lambda r: sorted(r) == list(range(1, n + 1))))
assert (per_user.rows == n).all(), f"users without exactly {n} rows: {per_user[per_user.rows != n].head()}"
assert (per_user.movies == n).all() and per_user.ranks.all(), "a list repeats a movie or skips a rank"
seen = recs.merge(ratings, on=["user_id", "movie_id"])
assert seen.empty, f"{len(seen)} recommendations of movies the user rated, e.g. {seen.head(3).to_dict('records')}"
assert set(recs.movie_id) <= set(ratings.movie_id), "a recommended movie nobody rated"

# Who got the popularity list instead of the model's: users with fewer than 20 ratings (none in ml-latest-small)
# and users the lists' model has no factors for, which includes every user with no rating >= 4.
counts = ratings.groupby("user_id").size()
assert set(fallback.user_id[fallback.reason == "few_ratings"]) == set(counts.index[counts < 20])
never_liked = users - set(ratings.user_id[ratings.rating >= 4])
assert never_liked <= set(fallback.user_id), f"users with no rating >= 4 got model lists: {never_liked}"
model_rows = len(recs[~recs.user_id.isin(fallback.user_id)])
assert model_rows == n * (len(users) - fallback.user_id.nunique()) and model_rows >= 0.9 * len(recs), \
    f"{model_rows} of {len(recs)} rows from the model ({len(fallback)} fallback users)"
print(f"lists ok: {len(users)} users x {n} rows, {model_rows} from the model, {len(fallback)} popularity lists, "
      "none of a rated movie")
PYEOF
}

for mode in "${MODES[@]}"; do
  mkdir -p "$WORK/$mode"
  # 3. The cluster, the connection, the input and ROOT.
  if [ "$mode" = standalone ]; then
    step "standalone: starting the cluster on port $MASTER_PORT"
    scripts/local_cluster.sh start
    export AIRFLOW_CONN_SPARK_DEFAULT="spark://127.0.0.1:$MASTER_PORT?deploy-mode=client"
    input=$RELEASE out=$WORK/standalone/out
    fetch() { cp -r "$1" "$2"; }
  else
    step "yarn: starting HDFS and YARN (scripts/hadoop_local.sh), input on HDFS"
    if ! "$HADOOP_LOCAL" status >/dev/null 2>&1; then
      hadoop_started=1
      "$HADOOP_LOCAL" start >/dev/null
    fi
    eval "$("$HADOOP_LOCAL" env | grep -E '^export (HADOOP_CONF_DIR|YARN_CONF_DIR|MFSPARK_HDFS)=')"
    properties=$("$HADOOP_LOCAL" spark-archive | tail -n 1)  # spark.yarn.archive: Spark's jars uploaded once
    hdfs_base=$MFSPARK_HDFS/airflow-test/$(basename "$WORK")
    "$HADOOP_LOCAL" dfs -mkdir -p "$hdfs_base"
    "$HADOOP_LOCAL" dfs -put "$RELEASE" "$hdfs_base/input"
    # The task follows the application through the ResourceManager's REST API: its address from yarn-site.xml.
    rm_web=$(sed -n 's|.*yarn.resourcemanager.webapp.address</name><value>\([^<]*\)<.*|\1|p' "$HADOOP_CONF_DIR/yarn-site.xml")
    export AIRFLOW_CONN_SPARK_YARN="spark://yarn?deploy-mode=cluster&queue=default&yarn_resourcemanager_webapp_address=http%3A%2F%2F$rm_web"
    export MFSPARK_SPARK_PROPERTIES=$properties
    input=$hdfs_base/input out=$hdfs_base/out
    fetch() { "$HADOOP_LOCAL" dfs -get "$1" "$2"; }
  fi

  # 4. One night of the DAG, end to end: the pipeline, then publish.
  step "$mode: airflow dags test mfspark_nightly $DATE"
  MFSPARK_CLUSTER=$mode MFSPARK_INPUT=$input MFSPARK_OUT=$out \
    "$AIRFLOW" dags test mfspark_nightly "$DATE" >"$WORK/$mode/dags-test.log" 2>&1 \
    || { tail -n 60 "$WORK/$mode/dags-test.log" >&2; fail "$mode: airflow dags test exited non-zero"; }
  grep -q "Spark-Submit cmd" "$WORK/$mode/dags-test.log" || fail "$mode: the task never ran spark-submit"
  grep -q -- "--master yarn" "$WORK/$mode/dags-test.log" || [ "$mode" != yarn ] || fail "yarn: not submitted to YARN"

  # 5. The run and its lists.
  step "$mode: checks"
  check_run "$mode" "$out"
  [ "$mode" != standalone ] || scripts/local_cluster.sh stop >/dev/null
done
step "done"
say "passed (${MODES[*]})"
