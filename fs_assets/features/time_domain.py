"""Per-sensor statistics of a window: mean, std, min, max, p95, slope (Spark aggregate expressions)."""

from pyspark.sql import Column
from pyspark.sql import functions as F

from fs_assets.features.registry import PER_SENSOR_STATISTICS


def _guarded(sensor: str, statistic: str, value: Column) -> Column:
    # NULL when the window holds too few non-NULL values of the sensor (the registry's threshold).
    return F.when(F.count(F.col(sensor)) >= PER_SENSOR_STATISTICS[statistic][1], value)


def sensor_statistics(sensor: str) -> list[Column]:
    x = F.col(sensor)
    return [
        _guarded(sensor, "mean", F.avg(x)).alias(f"{sensor}_mean"),
        _guarded(sensor, "std", F.stddev_samp(x)).alias(f"{sensor}_std"),
        _guarded(sensor, "min", F.min(x)).alias(f"{sensor}_min"),
        _guarded(sensor, "max", F.max(x)).alias(f"{sensor}_max"),
        # Exact percentile with linear interpolation (numpy's default); percentile_approx returns an
        # observed value that can sit several sigma off on small or on/off windows.
        _guarded(sensor, "p95", F.percentile(x, F.lit(0.95))).alias(f"{sensor}_p95"),
        _guarded(sensor, "slope", F.regr_slope(x, F.col("minutes_offset"))).alias(f"{sensor}_slope"),
    ]
