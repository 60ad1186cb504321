"""spark-submit application for tests/test_cluster.py: fit ALS, optionally wait, then write the factors.

    cluster_fit.py RATINGS_PARQUET OUT [--wait-for FILE]

With `--wait-for`, it prints `FITTED` once `ALS.fit` has returned and waits until FILE exists
before it reads the model: the test kills a worker in that gap, when the model's factor blocks
are all the job holds. The profile is conf/cluster.toml (the master comes from spark-submit).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from mfspark.models.als.estimator import ALS
from mfspark.runtime.session import build_session, load_profile

# One Spark job for the 6 iterations (checkpointed at the end): a worker killed at iteration 2 is lost inside it,
# while later iterations need its shuffle outputs and blocks. (Checkpointed every 2, a kill between two jobs cost no
# task: the next job starts from the checkpoint.)
PARAMS = {"rank": 4, "reg": 0.1, "max_iter": 6, "checkpoint_interval": 6, "seed": 7,
          "num_user_blocks": 2, "num_item_blocks": 2}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("ratings")
    parser.add_argument("out")
    parser.add_argument("--wait-for")
    args = parser.parse_args()
    # INFO: the per-iteration lines the worker-kill test waits for.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spark = build_session(load_profile("cluster", Path(args.out).parent), "mfspark-cluster-test")
    ratings = spark.read.parquet(args.ratings).select("user_id", "movie_id", "rating")
    model = ALS(**PARAMS).fit(ratings)
    if args.wait_for:
        print("FITTED", flush=True)
        while not Path(args.wait_for).exists():
            time.sleep(0.2)
    model.save(args.out)
    spark.stop()


if __name__ == "__main__":
    main()
