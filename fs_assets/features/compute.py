"""Windowed device features from clean readings: one Spark job per window size.

Readings are partitioned by device and sorted, and each partition streams through the vectorised
numpy kernels of `fs_assets.features.kernels` (the one definition of every feature's math and
NULL threshold) in `mapInPandas`, whole devices at a time. The tests hold it to an independent
pandas/numpy computation. Spark's own aggregates are not used for the math: their exact
`percentile` alone cost more than the whole kernel, and a second implementation drifted from the
registry's thresholds.
"""

from collections.abc import Iterator
from datetime import datetime

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fs_assets.features import kernels
from fs_assets.features.windows import closed_until, window_end
from fs_assets.timestamps import instant
from fs_domain.contract import SENSOR_NAMES
from fs_domain.features import FEATURES, features_for
from fs_resources.schemas import features_spark_schema

KERNEL_SCHEMA = T.StructType(
    [T.StructField("device_id", T.StringType()), T.StructField("window_start", T.TimestampType())]
    + [T.StructField(f.name, T.LongType() if f.dtype == "long" else T.DoubleType()) for f in FEATURES]
)
# Rows a partition buffers before handing whole devices to the kernel (bounds Python memory).
KERNEL_FLUSH_ROWS = 500_000


def _kernel_partition(batches: Iterator[pd.DataFrame], minutes: int) -> Iterator[pd.DataFrame]:
    """Stream a device-sorted partition through the kernel, never splitting a device."""
    names = KERNEL_SCHEMA.fieldNames()
    buffer: list[pd.DataFrame] = []
    rows = 0

    def run(frame: pd.DataFrame) -> pd.DataFrame:
        return kernels.window_features_frame(frame, minutes)[names]

    for batch in batches:
        buffer.append(batch)
        rows += len(batch)
        if rows >= KERNEL_FLUSH_ROWS:
            frame = pd.concat(buffer, ignore_index=True)
            last = frame["device_id"].iat[-1]
            done = frame["device_id"] != last
            if done.any():
                yield run(frame[done])
            buffer, rows = [frame[~done]], int((~done).sum())
    if rows:
        yield run(pd.concat(buffer, ignore_index=True))


def window_features(clean: DataFrame, minutes: int, version: str, computed_at: datetime) -> DataFrame:
    """One row per (device, window of `minutes`) present in `clean` and ended by `computed_at`, with every feature of `version`."""
    # Readings of windows still open are not read: on a day in progress the 1-day size reads nothing
    # (Delta skips every file of the day by its ts statistics) instead of computing the day to drop it.
    closed = F.col("ts") < instant(closed_until(computed_at, minutes))
    readings = clean.where(closed).select("device_id", "ts", *SENSOR_NAMES)
    features = (
        readings.repartition("device_id")
        .sortWithinPartitions("device_id", "ts")
        .mapInPandas(lambda batches: _kernel_partition(batches, minutes), KERNEL_SCHEMA)
    )
    # NaN means "not computable" in numpy; in the table it is NULL.
    for f in FEATURES:
        if f.dtype == "double":
            features = features.withColumn(f.name, F.nanvl(F.col(f.name), F.lit(None).cast("double")))
    return _finish(features, minutes, version, computed_at)


def _finish(features: DataFrame, minutes: int, version: str, computed_at: datetime) -> DataFrame:
    features = (
        features.withColumn("window_end", window_end(F.col("window_start"), minutes))
        # A window still running at `computed_at` (today's, on a live landing zone) is not written:
        # its values would be served as if final. The next run, after it ends, computes it.
        .where(F.col("window_end") <= instant(computed_at))
        .withColumn("window_duration_minutes", F.lit(minutes).cast("int"))
        .withColumn("window_date", F.to_date("window_start"))
        .withColumn("computed_at", instant(computed_at))
        .withColumn("feature_set_version", F.lit(version))
    )
    schema = features_spark_schema(version)
    wanted = {f.name for f in features_for(version)}
    assert wanted <= set(features.columns), sorted(wanted - set(features.columns))
    return features.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])
