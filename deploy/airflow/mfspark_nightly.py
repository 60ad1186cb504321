"""Airflow DAG: the mfspark pipeline once a night on a Spark cluster, then a task that publishes its lists.

  pipeline  `spark-submit --py-files dist/mfspark.zip jobs/pipeline.py --input IN --out ROOT --run-id <night>`
            through the connection of the chosen cluster (MFSPARK_CLUSTER):
              standalone  connection `spark_default`, e.g. AIRFLOW_CONN_SPARK_DEFAULT='spark://HOST:7077?deploy-mode=client',
                          profile `cluster`;
              yarn        connection `spark_yarn`, e.g. AIRFLOW_CONN_SPARK_YARN='spark://yarn?deploy-mode=cluster&queue=default
                          &yarn_resourcemanager_webapp_address=http%3A%2F%2Frm%3A8088' (HADOOP_CONF_DIR in the
                          worker's environment), profile `yarn`; IN and ROOT are then hdfs:// or s3a:// URIs that
                          every container reads.
  publish   resolves the run the way every reader does, `mfspark runs ROOT --latest` (ROOT, or a run URI, which
            names itself), then `mfspark runs RUN --latest --stage recommend` for where that run's lists are (a
            reused stage lives in an earlier run): its last line, `<that location>/recommendations`, is the
            task's XCom for whatever loads the lists.

- Run id = the data interval's date (`{{ ds_nodash }}`, given as --run-id): a retry, or a rerun of the same night,
  names the same `ROOT/runs/<run_id>/` and the pipeline resumes it (stages whose outputs exist for the same inputs
  and parameters are skipped) instead of starting a second run.
- No overlap: `max_active_runs=1`, and the pipeline's lock on ROOT refuses a second writer anyway.
- Retries with exponential back-off; a night that still fails leaves `ROOT/LATEST` on the last complete run.

Settings, read from the Airflow worker's environment at parse time (no database access):
  MFSPARK_CLUSTER      standalone (default) or yarn: the connection and the profile above
  MFSPARK_HOME         project checkout with jobs/ and dist/mfspark.zip (scripts/build_pyfiles.sh);
                       default: two directories above this file
  MFSPARK_PYTHON       Python of the driver and the executors (default MFSPARK_HOME/.venv/bin/python); on a YARN
                       cluster whose nodes lack it: ./env/bin/python with MFSPARK_ARCHIVES=env.tar.gz#env (venv-pack)
  MFSPARK_ARCHIVES     spark-submit --archives (default none)
  MFSPARK_SPARK_PROPERTIES  spark-submit --properties-file (default none: Spark's spark-defaults.conf), e.g. with
                       spark.yarn.archive so a submit does not upload Spark's jars
  MFSPARK_CLI          the `mfspark` command on the Airflow worker (default: beside MFSPARK_PYTHON)
  MFSPARK_INPUT        release directory: ratings.csv (and movies.csv) of a MovieLens release
                       (default MFSPARK_HOME/../shared/data/movielens/ml-latest-small)
  MFSPARK_OUT          pipeline output root ROOT (default MFSPARK_HOME/out/nightly)
  MFSPARK_RETRIES      retries of a failed night (default 2; scripts/test_airflow.sh sets 0 to fail fast)
Per-run parameters (`airflow dags trigger mfspark_nightly -c '{"input": "hdfs:///data/ml-25m"}'`): input, out, profile.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

# The one setting that picks the cluster: its Airflow connection and the mfspark profile sized for it.
CLUSTERS = {
    "standalone": {"conn_id": "spark_default", "profile": "cluster", "yarn_track_via_rm_api": False},
    # YARN cluster mode: spark-submit returns once YARN accepted the application, and the task follows it through
    # the ResourceManager's REST API (the connection's extra `yarn_resourcemanager_webapp_address`); a retry after
    # an Airflow worker crash finds the running application instead of submitting a second one (the provider's
    # `durable` default, which refuses YARN cluster mode without this tracking).
    "yarn": {"conn_id": "spark_yarn", "profile": "yarn", "yarn_track_via_rm_api": True},
}
CLUSTER = os.environ.get("MFSPARK_CLUSTER", "standalone")
if CLUSTER not in CLUSTERS:
    raise ValueError(f"MFSPARK_CLUSTER={CLUSTER!r}: expected one of {', '.join(CLUSTERS)}")

HOME = Path(os.environ.get("MFSPARK_HOME", Path(__file__).resolve().parents[2]))
PYTHON = os.environ.get("MFSPARK_PYTHON", str(HOME / ".venv" / "bin" / "python"))
CLI = os.environ.get("MFSPARK_CLI", str(Path(PYTHON).parent / "mfspark"))
INPUT = os.environ.get("MFSPARK_INPUT", str(HOME.parent / "shared" / "data" / "movielens" / "ml-latest-small"))
OUT = os.environ.get("MFSPARK_OUT", str(HOME / "out" / "nightly"))
RETRIES = int(os.environ.get("MFSPARK_RETRIES", "2"))

with DAG(
    dag_id="mfspark_nightly",
    description="MovieLens ratings -> ALS -> top-10 lists, one run per night",
    schedule="0 2 * * *",  # 02:00 UTC: the same night as the cron line in the README
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,  # a missed night is not replayed: the next run trains on the newer data anyway
    max_active_runs=1,
    max_active_tasks=1,
    params={"input": INPUT, "out": OUT, "profile": CLUSTERS[CLUSTER]["profile"]},
    default_args={
        "retries": RETRIES,
        "retry_delay": timedelta(minutes=10),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(hours=6),
    },
    tags=["mfspark"],
) as dag:
    pipeline = SparkSubmitOperator(
        task_id="pipeline",
        conn_id=CLUSTERS[CLUSTER]["conn_id"],
        yarn_track_via_rm_api=CLUSTERS[CLUSTER]["yarn_track_via_rm_api"],
        application=str(HOME / "jobs" / "pipeline.py"),
        py_files=str(HOME / "dist" / "mfspark.zip"),
        archives=os.environ.get("MFSPARK_ARCHIVES"),
        properties_file=os.environ.get("MFSPARK_SPARK_PROPERTIES"),
        name="mfspark-nightly-{{ ds_nodash }}",
        # The driver's and executors' Python must be the project's (numpy, numba, pyarrow), not the host's default;
        # in YARN cluster mode the driver runs in a container too, so both are Spark settings, not the environment.
        conf={"spark.pyspark.python": PYTHON, "spark.pyspark.driver.python": PYTHON},
        application_args=[
            "--profile", "{{ params.profile }}",
            "--input", "{{ params.input }}",
            "--out", "{{ params.out }}",
            "--run-id", "{{ ds_nodash }}",
        ],
    )
    publish = BashOperator(
        task_id="publish",
        # No path guessing: LATEST names the last complete run, and a stage reused from an earlier run lives there.
        bash_command='set -euo pipefail; run=$("$MFSPARK" runs "$ROOT" --latest); echo "run: $run" >&2; '
                     'echo "$("$MFSPARK" runs "$run" --latest --stage recommend)/recommendations"',
        env={"MFSPARK": CLI, "ROOT": "{{ params.out }}"},
        append_env=True,  # HADOOP_CONF_DIR, JAVA_HOME: what the mfspark command needs to read hdfs:// or s3a://
    )
    pipeline >> publish
