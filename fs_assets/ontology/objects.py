"""The `device_objects` rows: registry attributes, the latest complete day's features, the latest score."""

from datetime import datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fs_domain.device import ANOMALY_SCORE_COLUMN, DEVICE


def device_objects_frame(features: DataFrame, registry: DataFrame, scores: DataFrame | None, hydrated_at: datetime) -> DataFrame:
    """One row per registered device, its columns exactly `DEVICE`'s properties.

    `features` is the `device_features` table (any window sizes), `registry` the `device_registry`
    table, `scores` the anomaly scores (`device_id`, `window_end`, `anomaly_score`) or None before
    any exist. Windows and scores ending after `hydrated_at` are not known yet and never count.
    """
    as_of = F.lit(hydrated_at).cast("timestamp")
    minutes = DEVICE.feature_window_minutes
    feature_props = DEVICE.from_source("feature")
    latest = (
        features.where((F.col("window_duration_minutes") == minutes) & (F.col("window_end") <= as_of))
        .groupBy("device_id")
        .agg(F.max_by(F.struct("window_end", *[p.feature for p in feature_props]), "window_end").alias("w"))
    )
    rows = registry.join(latest, "device_id", "left")
    if scores is not None:
        latest_score = (
            scores.where(F.col("window_end") <= as_of)
            .groupBy("device_id")
            .agg(F.max_by(ANOMALY_SCORE_COLUMN, "window_end").alias("_score"))
        )
        rows = rows.join(latest_score, "device_id", "left")
    else:
        rows = rows.withColumn("_score", F.lit(None))

    def column(p):
        if p.source == "registry":
            expression = F.col(p.name)
        elif p.source == "feature":
            expression = F.col(f"w.{p.feature}")
        elif p.source == "anomaly_scores":
            expression = F.col("_score")
        elif p.source == "window":
            expression = F.col("w.window_end")
        elif p.source == "hydration":
            expression = as_of
        else:
            raise ValueError(f"{p.name}: unknown source {p.source}")
        return expression.cast(p.dtype).alias(p.name)

    return rows.select(*[column(p) for p in DEVICE.properties])


def objects_arrow(objects: DataFrame):
    """`device_objects` rows as an Arrow table (exact: ints stay ints, NULLs stay NULL)."""
    return objects.select(*DEVICE.property_names).toArrow()
