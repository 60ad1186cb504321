"""User and movie ids of any type (long, string) for ALS: a dense int index built once per fit.

The block layout and the recommendation kernels work on int ids (hashed into blocks, packed
into numpy arrays). An id column that does not fit (strings, longs beyond 2^31-1) is mapped to
1..n by one index table per column, as LensKit and `implicit` do (MLlib accepts Int ids only):
the ratings are encoded once before the layout, and every output (factor tables, predictions,
recommendation lists) is decoded back. Columns whose ids already fit keep the fast path: no
index, no join.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, StructField, StructType

from mfspark.errors import InputError

MAX_INDEX = 2**31 - 1


@dataclass(frozen=True)
class IdIndex:
    """(id <original type>, index int) of one id column, index 1..n in ascending id order."""

    table: DataFrame

    @classmethod
    def build(cls, ratings: DataFrame, column: str) -> IdIndex:
        """The index of `column`'s distinct values, checkpointed (lineage cut) so it is computed once
        and every later read (each side of the layout, the outputs) sees the same numbering."""
        distinct = ratings.select(column).distinct().orderBy(column)
        schema = StructType([StructField("id", ratings.schema[column].dataType, False),
                             StructField("index", IntegerType(), False)])
        numbered = distinct.rdd.zipWithIndex().map(lambda pair: (pair[0][0], pair[1] + 1))
        table = ratings.sparkSession.createDataFrame(numbered, schema).checkpoint()
        largest = table.agg(F.max("index")).first()[0]
        if largest > MAX_INDEX:
            raise InputError(f"column '{column}': {largest} distinct ids, more than ALS can index ({MAX_INDEX})")
        return cls(table)

    def encode(self, frame: DataFrame, column: str) -> DataFrame:
        """`frame` with `column` replaced by its index (rows whose id the index lacks are dropped)."""
        mapping = self.table.select(F.col("id").alias(column), F.col("index").alias("_index"))
        return frame.join(mapping, column).drop(column).withColumnRenamed("_index", column)

    def decode(self, frame: DataFrame, column: str) -> DataFrame:
        """`frame` with `column` (an index) replaced by the original id."""
        mapping = self.table.select(F.col("index").alias(column), F.col("id").alias("_id"))
        return frame.join(mapping, column).drop(column).withColumnRenamed("_id", column)


@dataclass(frozen=True)
class IdIndexes:
    """The indexes of a fit: `user` and `movie`, each None when that column's ids are ints already."""

    user: IdIndex | None = None
    movie: IdIndex | None = None

    @classmethod
    def build(cls, ratings: DataFrame, columns: tuple[str, ...]) -> IdIndexes:
        return cls(*(IdIndex.build(ratings, c) if c in columns else None for c in ("user_id", "movie_id")))

    @property
    def any(self) -> bool:
        return self.user is not None or self.movie is not None

    def encode(self, frame: DataFrame, user_col: str | None = "user_id", movie_col: str | None = "movie_id"
               ) -> DataFrame:
        """Ids of `frame`'s user and movie columns (None: no such column) as the fit's ints."""
        for index, column in ((self.user, user_col), (self.movie, movie_col)):
            if index is not None and column is not None:
                frame = index.encode(frame, column)
        return frame

    def decode(self, frame: DataFrame, user_col: str | None = "user_id", movie_col: str | None = "movie_id"
               ) -> DataFrame:
        """The inverse of `encode`, keeping `frame`'s column order."""
        columns = frame.columns
        for index, column in ((self.user, user_col), (self.movie, movie_col)):
            if index is not None and column is not None:
                frame = index.decode(frame, column)
        return frame.select(*columns)

    def save(self, path: str) -> None:
        for name, index in (("users", self.user), ("movies", self.movie)):
            if index is not None:
                index.table.write.mode("overwrite").parquet(f"{path}/{name}")

    @classmethod
    def load(cls, spark, path: str, exists) -> IdIndexes:
        """The indexes saved under `path` (`exists(path) -> bool` tells which were)."""
        return cls(*(IdIndex(spark.read.parquet(f"{path}/{name}")) if exists(f"{path}/{name}") else None
                     for name in ("users", "movies")))
