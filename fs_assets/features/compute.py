"""Windowed device features from clean readings: one Spark job per window size.

    clean readings ─► tag windows ─► groupBy(device, window): time-domain + cross-sensor aggregates
                                 └─► per device-day pandas UDF: spectral entropy (60 and 1440 min)
                                        └─► join ─► registry column order
"""

from datetime import datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fs_assets.features import cross_sensor, frequency, time_domain
from fs_assets.features.registry import FEATURES_BY_NAME, features_for, spark_schema, table_columns
from fs_assets.features.windows import MICROS_PER_MINUTE, with_window
from fs_assets.ingest.contract import SENSOR_NAMES

ENTROPY_SCHEMA = T.StructType(
    [T.StructField("device_id", T.StringType()), T.StructField("window_start", T.TimestampType()), T.StructField("spectral_entropy_vibration", T.DoubleType())]
)


def window_features(clean: DataFrame, minutes: int, version: str, computed_at: datetime) -> DataFrame:
    """One row per (device, window of `minutes`) present in `clean`, with every feature of `version`."""
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

    features = (
        features.withColumn("window_end", F.timestamp_micros(F.unix_micros("window_start") + F.lit(minutes * MICROS_PER_MINUTE)))
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
