"""`validate_ratings` lets every whole id in 1..2^31-1 through, whatever its numeric type, as int.

(Each kind of refused input is tested against every model in test_model_contract.py.)
"""

from mfspark.models.inputs import validate_ratings


def test_whole_ids_of_any_numeric_type_become_int(spark):
    ratings = spark.createDataFrame([(1.0, 2**31 - 1, 4), (7.0, 3, 1)], "user_id double, movie_id long, rating int")
    checked = validate_ratings(ratings)
    assert checked.schema.simpleString() == "struct<user_id:int,movie_id:int,rating:int>"
    assert sorted(checked.collect()) == [(1, 2**31 - 1, 4), (7, 3, 1)]
