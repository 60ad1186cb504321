"""The one check every `fit` runs on its ratings, so that no input can silently corrupt a model.

Refused, as MLlib's ALS refuses them: an empty table; null, NaN or infinite ratings (one NaN
turns every ALS factor into NaN); ids that are not whole numbers in 1..2^31-1 whatever their
numeric type (1.5 would be truncated into user 1; 2^31 overflows an int, or wraps when ANSI
mode is off); non-numeric ids or ratings. All counts and one example of each kind come from a
single aggregation, so the check costs one pass and collects nothing but that one row.

`check_ratings(df, any_ids=True)` (the ALS estimator) also accepts string ids and integral ids
beyond that range, and says which columns need a dense index (`mfspark.models.als.ids`). When
`checkable_while_packing(df)`, ALS saves even that pass: its layout, which reads every rating
anyway, counts the ratings this check could object to, and only if there are any (or none at
all) runs this check, which then names the problem exactly as here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql import functions as F
from pyspark.sql.types import (
    DecimalType,
    DoubleType,
    FloatType,
    IntegerType,
    IntegralType,
    NumericType,
    StringType,
)

from mfspark.errors import InputError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

ID_COLUMNS = ("user_id", "movie_id")
RATING_COLUMNS = (*ID_COLUMNS, "rating")
MAX_ID = 2**31 - 1


def _is_float(df: DataFrame, column: str) -> bool:
    return isinstance(df.schema[column].dataType, (FloatType, DoubleType))


def _outside(column: str) -> Column:
    value = F.col(column)
    return (value < 1) | (value > MAX_ID)


def _problems(df: DataFrame, any_ids: bool = False) -> list[tuple[str, str, Column]]:
    """(column, what is wrong, condition) for every kind of bad value in a numeric column.

    With `any_ids`, integral ids outside 1..2^31-1 are not a problem (they get an index).
    """
    found = []
    for column in ID_COLUMNS:
        value = F.col(column)
        if any_ids and isinstance(df.schema[column].dataType, IntegralType):
            found.append((column, "a null id", value.isNull()))
            continue
        outside = _outside(column)
        if isinstance(df.schema[column].dataType, DecimalType):
            outside = outside | (value != F.floor(value))
        if _is_float(df, column):
            outside = outside | F.isnan(value) | (value != F.floor(value))
        found += [(column, "a null id", value.isNull()),
                  (column, f"an id that is not a whole number in 1..{MAX_ID}", outside)]
    rating = F.col("rating")
    not_finite = F.isnan(rating) | (F.abs(rating) == float("inf")) if _is_float(df, "rating") else F.lit(False)
    found += [("rating", "a null rating", rating.isNull()), ("rating", "a NaN or infinite rating", not_finite)]
    return found


def _row_text() -> Column:
    """'user_id=1.5, movie_id=10, rating=4.0' for the example row of an error."""
    parts = [F.concat(F.lit(f"{c}="), F.coalesce(F.col(c).cast("string"), F.lit("null"))) for c in RATING_COLUMNS]
    return F.concat_ws(", ", *parts)


def checkable_while_packing(df: DataFrame) -> bool:
    """Whether `check_ratings(df, any_ids=True)` is decided by counting, as the ALS layout packs the
    ratings, those with a null, a NaN or infinite rating or an id below 1 (`blocks.flagged_ratings`).

    True for int ids and numeric ratings: the layout's casts (ratings to float) then hide nothing
    the check looks at (as casting 1.5 to int would, or 2^31), so with none counted the check would
    pass df as it is, with no column to index. (A rating too large for a float becomes infinite:
    counted, so the check decides, as before.)
    """
    columns = {field.name: field.dataType for field in df.schema.fields}
    return (all(isinstance(columns.get(c), IntegerType) for c in ID_COLUMNS)
            and isinstance(columns.get("rating"), NumericType))


def validate_ratings(df: DataFrame) -> DataFrame:
    """df with user_id and movie_id as int, or an InputError naming the column and an offending row."""
    checked, _ = check_ratings(df)
    return checked


def check_ratings(df: DataFrame, any_ids: bool = False) -> tuple[DataFrame, tuple[str, ...]]:
    """(df, id columns needing an index) after the checks of `validate_ratings`.

    Without `any_ids` no column needs an index and both id columns come back as int. With it,
    string id columns and integral ones holding an id outside 1..2^31-1 are left as they are
    (only nulls refused) and named in the result; the other id columns come back as int.
    """
    missing = [c for c in RATING_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"ratings need columns {', '.join(RATING_COLUMNS)}; missing: {', '.join(missing)}")
    strings = [c for c in ID_COLUMNS if any_ids and isinstance(df.schema[c].dataType, StringType)]
    integral = [c for c in ID_COLUMNS if any_ids and isinstance(df.schema[c].dataType, IntegralType)]
    non_numeric = [c for c in RATING_COLUMNS if not isinstance(df.schema[c].dataType, NumericType) and c not in strings]
    # Comparing a string column with numbers would fail (ANSI) or cast silently: such a column gets
    # only an example value, and the problems of the numeric ones are counted beside it.
    problems = [p for p in _problems(df, any_ids) if p[0] not in non_numeric and p[0] not in strings]
    problems += [(c, "a null id", F.col(c).isNull()) for c in strings]
    row = df.agg(
        F.count(F.lit(1)).alias("rows"),
        *[F.first(F.col(c), ignorenulls=True).cast("string").alias(f"first_{c}") for c in non_numeric],
        *[F.count_if(cond).alias(f"bad_{i}") for i, (_, _, cond) in enumerate(problems)],
        *[F.first(F.when(cond, _row_text()), ignorenulls=True).alias(f"example_{i}")
          for i, (_, _, cond) in enumerate(problems)],
        *[F.count_if(_outside(c)).alias(f"beyond_{c}") for c in integral],
    ).first()
    if row["rows"] == 0:
        raise InputError("the ratings are empty: there is nothing to fit")
    if non_numeric:
        column = non_numeric[0]
        raise InputError(f"column '{column}' must be numeric, got {df.schema[column].dataType.simpleString()} "
                         f"(e.g. '{row[f'first_{column}']}')")
    for i, (column, what, _) in enumerate(problems):
        if count := row[f"bad_{i}"]:
            raise InputError(f"column '{column}': {count} row{'s' if count > 1 else ''} with {what}, "
                             f"e.g. ({row[f'example_{i}']})")
    indexed = tuple(c for c in ID_COLUMNS if c in strings or (c in integral and row[f"beyond_{c}"]))
    return df.withColumns({c: F.col(c).cast("int") for c in ID_COLUMNS if c not in indexed}), indexed
