import pytest

from mfspark.runtime.storage import atomic_output, read_json, replace_local_dir, write_json


def test_atomic_output_replaces_previous_output_whole(spark, tmp_path):
    final = str(tmp_path / "tables")
    with atomic_output(spark, final) as staging:
        spark.range(3).write.parquet(f"{staging}/t")
        write_json(spark, f"{staging}/manifest.json", {"run": 1})
    with atomic_output(spark, final) as staging:
        spark.range(5).write.parquet(f"{staging}/t")
        write_json(spark, f"{staging}/manifest.json", {"run": 2})
    assert spark.read.parquet(f"{final}/t").count() == 5
    assert read_json(spark, f"{final}/manifest.json") == {"run": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tables"]


def test_failed_run_leaves_previous_output_intact(spark, tmp_path):
    final = str(tmp_path / "tables")
    with atomic_output(spark, final) as staging:
        spark.range(3).write.parquet(f"{staging}/t")
    with pytest.raises(RuntimeError, match="boom"), atomic_output(spark, final) as staging:
        spark.range(7).write.parquet(f"{staging}/t")
        raise RuntimeError("boom")
    assert spark.read.parquet(f"{final}/t").count() == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tables"]


def test_replace_local_dir_swaps_whole_and_leaves_nothing_behind(tmp_path):
    final, staging = tmp_path / "out", tmp_path / "out.staging-1"
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    replace_local_dir(staging, final)  # no previous output
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    staging.mkdir()
    (staging / "newer.txt").write_text("newer")
    replace_local_dir(staging, final)
    assert [p.name for p in final.iterdir()] == ["newer.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
