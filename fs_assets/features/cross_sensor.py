"""Features across sensors: reading count, completeness, pressure ratio, compressor duty cycle."""

from pyspark.sql import Column
from pyspark.sql import functions as F

from fs_assets.features.registry import COMPRESSOR_ON_AMPS, FEATURES_BY_NAME
from fs_assets.ingest.contract import SENSOR_NAMES


def reading_count() -> Column:
    return F.count(F.lit(1)).cast("long").alias("reading_count")


def sensor_completeness() -> Column:
    present = sum((F.count(F.col(s)) for s in SENSOR_NAMES), F.lit(0))
    return (present / (F.count(F.lit(1)) * len(SENSOR_NAMES))).alias("sensor_completeness")


def pressure_ratio() -> Column:
    """Computed after aggregation, from the two means."""
    low = F.col("pressure_low_mean")
    return F.when(low != 0, F.col("pressure_high_mean") / low).alias("pressure_ratio")


def compressor_duty_cycle() -> Column:
    current = F.col("current_compressor")
    running = F.sum(F.when(current > COMPRESSOR_ON_AMPS, 1).when(current.isNotNull(), 0))
    n = F.count(current)
    return F.when(n >= FEATURES_BY_NAME["compressor_duty_cycle"].min_readings, running / n).alias("compressor_duty_cycle")


def vibration_rms() -> Column:
    v = F.col("vibration_compressor")
    n = F.count(v)
    return F.when(n >= FEATURES_BY_NAME["vibration_compressor_rms"].min_readings, F.sqrt(F.avg(v * v))).alias("vibration_compressor_rms")
