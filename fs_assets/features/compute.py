"""Windowed device features from clean readings: one Spark job per window size.

Two engines compute the same features (the tests hold both to an independent numpy computation):

- `kernel` (default): readings are partitioned by device and sorted, and each partition streams
  through the vectorised numpy kernels of `fs_assets.features.kernels` in a pandas UDF, whole
  devices at a time. The benchmark (bench/features_bench.py) shows it well ahead of the built-ins,
  whose exact `percentile` alone costs more than the whole kernel.
- `builtin`: Spark aggregate expressions (`time_domain`, `cross_sensor`) plus the spectral-entropy
  kernel per device-day; kept as the readable reference and for the benchmark's comparison.
"""

from datetime import datetime
from typing import Iterator

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fs_assets.features import cross_sensor, frequency, kernels, time_domain
from fs_assets.features.registry import FEATURES, FEATURES_BY_NAME, features_for, spark_schema, table_columns
from fs_assets.features.windows import MICROS_PER_MINUTE, with_window
from fs_assets.ingest.contract import SENSOR_NAMES

ENTROPY_SCHEMA = T.StructType(
    [T.StructField("device_id", T.StringType()), T.StructField("window_start", T.TimestampType()), T.StructField("spectral_entropy_vibration", T.DoubleType())]
)


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


def window_features(clean: DataFrame, minutes: int, version: str, computed_at: datetime, engine: str = "kernel") -> DataFrame:
    """One row per (device, window of `minutes`) present in `clean` and ended by `computed_at`, with every feature of `version`."""
    if engine == "builtin":
        features = _builtin_features(clean, minutes)
    elif engine == "kernel":
        readings = clean.select("device_id", "ts", *SENSOR_NAMES)
        features = (
            readings.repartition("device_id")
            .sortWithinPartitions("device_id", "ts")
            .mapInPandas(lambda batches: _kernel_partition(batches, minutes), KERNEL_SCHEMA)
        )
        # NaN means "not computable" in numpy; in the table it is NULL.
        for f in FEATURES:
            if f.dtype == "double":
                features = features.withColumn(f.name, F.nanvl(F.col(f.name), F.lit(None).cast("double")))
    else:
        raise ValueError(f"unknown engine {engine!r}: kernel or builtin")
    return _finish(features, minutes, version, computed_at)


def _builtin_features(clean: DataFrame, minutes: int) -> DataFrame:
    tagged = with_window(clean.select("device_id", "ts", *SENSOR_NAMES), minutes)
    aggregates = [
        cross_sensor.reading_count(),
        cross_sensor.sensor_completeness(),
        cross_sensor.compressor_duty_cycle(),
        cross_sensor.vibration_rms(),
        *[c for sensor in SENSOR_NAMES for c in time_domain.sensor_statistics(sensor)],
    ]
    features = tagged.groupBy("device_id", "window_start").agg(*aggregates).withColumn("pressure_ratio", cross_sensor.pressure_ratio())

    if minutes in FEATURES_BY_NAME["spectral_entropy_vibration"].windows:
        entropy = (
            tagged.select("device_id", "ts", "window_start", "vibration_compressor")
            # per device-day: all windows of the day in one numpy pass, memory bounded by one day
            .groupBy("device_id", F.to_date("window_start"))
            .applyInPandas(frequency.spectral_entropy_by_window, ENTROPY_SCHEMA)
            .withColumn("spectral_entropy_vibration", F.nanvl("spectral_entropy_vibration", F.lit(None).cast("double")))
        )
        features = features.join(entropy, on=["device_id", "window_start"], how="left")
    else:
        features = features.withColumn("spectral_entropy_vibration", F.lit(None).cast("double"))
    return features


def _finish(features: DataFrame, minutes: int, version: str, computed_at: datetime) -> DataFrame:
    features = (
        features.withColumn("window_end", F.timestamp_micros(F.unix_micros("window_start") + F.lit(minutes * MICROS_PER_MINUTE)))
        # A window still running at `computed_at` (today's, on a live landing zone) is not written:
        # its values would be served as if final. The next run, after it ends, computes it.
        .where(F.col("window_end") <= F.lit(computed_at).cast("timestamp"))
        .withColumn("window_duration_minutes", F.lit(minutes).cast("int"))
        .withColumn("window_date", F.to_date("window_start"))
        .withColumn("computed_at", F.lit(computed_at).cast("timestamp"))
        .withColumn("feature_set_version", F.lit(version))
    )
    schema = spark_schema(version)
    wanted = {f.name for f in features_for(version)}
    assert wanted <= set(features.columns), sorted(wanted - set(features.columns))
    return features.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])


__all__ = ["window_features", "table_columns"]
