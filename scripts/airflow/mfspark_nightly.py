"""Airflow DAG: the mfspark pipeline once a night on a Spark cluster.

One task, `spark-submit --py-files dist/mfspark.zip jobs/pipeline.py ...` through the
`spark_default` connection (its host and port are the master, e.g. spark://127.0.0.1:7077).

- Run id = the data interval's date (`{{ ds_nodash }}`, in the environment as MFSPARK_RUN_ID): a
  retry, or a rerun of the same night, names the same `OUT/runs/<run_id>/` and the pipeline
  resumes it (it skips stages whose outputs exist for the same inputs and parameters) instead of
  starting a second run.
- No overlap: `max_active_runs=1`, and the pipeline's lock on OUT refuses a second writer anyway.
- Retries with exponential back-off; a night that still fails leaves `OUT/latest` on the last
  complete run.

Where things are, read from the Airflow worker's environment at parse time (no database access):
  MFSPARK_HOME      project checkout with jobs/ and dist/mfspark.zip (scripts/build_pyfiles.sh);
                    default: two directories above this file
  MFSPARK_PYTHON    Python of the driver and the executors (default MFSPARK_HOME/.venv/bin/python)
  MFSPARK_DATA_DIR  directory of MovieLens releases (default MFSPARK_HOME/../shared/data/movielens)
  MFSPARK_OUT       pipeline output root (default MFSPARK_HOME/out/nightly)
  MFSPARK_RETRIES   retries of a failed night (default 2; scripts/test_airflow.sh sets 0 to fail fast)
Per-run parameters (`airflow dags trigger mfspark_nightly -c '{"dataset": "ml-25m"}'`): dataset, out, profile.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG

HOME = Path(os.environ.get("MFSPARK_HOME", Path(__file__).resolve().parents[2]))
PYTHON = os.environ.get("MFSPARK_PYTHON", str(HOME / ".venv" / "bin" / "python"))
DATA_DIR = os.environ.get("MFSPARK_DATA_DIR", str(HOME.parent / "shared" / "data" / "movielens"))
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
    params={"dataset": "ml-latest-small", "out": OUT, "profile": "cluster"},
    default_args={
        "retries": RETRIES,
        "retry_delay": timedelta(minutes=10),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(hours=6),
    },
    tags=["mfspark"],
) as dag:
    SparkSubmitOperator(
        task_id="pipeline",
        conn_id="spark_default",
        application=str(HOME / "jobs" / "pipeline.py"),
        py_files=str(HOME / "dist" / "mfspark.zip"),
        name="mfspark-nightly-{{ ds_nodash }}",
        # The executors' Python must be the project's (numpy, numba, pyarrow), not the worker host's default.
        conf={"spark.pyspark.python": PYTHON, "spark.pyspark.driver.python": PYTHON},
        env_vars={"PYSPARK_PYTHON": PYTHON, "MFSPARK_RUN_ID": "{{ ds_nodash }}"},
        application_args=[
            "--profile", "{{ params.profile }}",
            "--dataset", "{{ params.dataset }}",
            "--data-dir", DATA_DIR,
            "--out", "{{ params.out }}",
        ],
    )
