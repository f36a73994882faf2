"""The domain's column lists as Spark struct types and as Dagster column schemas (UI metadata).

The columns themselves are defined once in `fs_domain` (feature registry, `Device` type); this
module only translates their type names.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import dagster as dg

from fs_domain.device import DEVICE, ObjectProperty
from fs_domain.features import DEFAULT_FEATURE_SET_VERSION, FEATURES_BY_NAME, table_columns

if TYPE_CHECKING:
    from pyspark.sql import types as T


def spark_struct(columns: Iterable[tuple[str, str]], not_null: Iterable[str] = ()) -> T.StructType:
    """`[(name, "double"), ...]` as a Spark struct; the domain's type names are Spark's simple names."""
    from pyspark.sql import types as T

    types = {
        "string": T.StringType(),
        "timestamp": T.TimestampType(),
        "int": T.IntegerType(),
        "date": T.DateType(),
        "double": T.DoubleType(),
        "long": T.LongType(),
    }
    required = set(not_null)
    return T.StructType([T.StructField(name, types[dtype], name not in required) for name, dtype in columns])


def features_spark_schema(version: str = DEFAULT_FEATURE_SET_VERSION) -> T.StructType:
    """The `device_features` table schema of a feature set version."""
    return spark_struct((name, dtype) for name, dtype, _ in table_columns(version))


def device_spark_schema() -> T.StructType:
    """The `device_objects` table schema: one column per `Device` property."""
    return spark_struct(((p.name, p.dtype) for p in DEVICE.properties), not_null=[DEVICE.primary_key])


def features_column_schema(version: str = DEFAULT_FEATURE_SET_VERSION) -> dg.TableSchema:
    """The feature table's columns as shown in the Dagster UI (dagster/column_schema)."""
    columns = []
    for name, dtype, text in table_columns(version):
        f = FEATURES_BY_NAME.get(name)
        if f is not None:
            below = ", ".join(f"{f.threshold(w)} in {w} min" for w in f.windows)
            text = f"{text} [{f.unit}; NULL below {below} readings; since {f.added_in}]"
        columns.append(dg.TableColumn(name, dtype, description=text))
    return dg.TableSchema(columns=columns)


def device_column_schema() -> dg.TableSchema:
    """The `Device` object's properties as shown in the Dagster UI, each with its lineage."""

    def lineage(p: ObjectProperty) -> str:
        return f" ← `{p.feature}` ({p.window_minutes}-minute window)" if p.source == "feature" else ""

    return dg.TableSchema(columns=[dg.TableColumn(p.name, p.dtype, description=p.description + lineage(p)) for p in DEVICE.properties])
