"""The `device_objects` rows (registry attributes, the latest complete day's features, the latest
score) and each served model's latest input vector per device."""

from datetime import date, datetime, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fs_assets.timestamps import instant
from fs_domain.device import ANOMALY_SCORE_COLUMNS, DEVICE, SERVED_STATUSES
from fs_domain.models import VECTOR_LOOKBACK_DAYS, ModelSpec, vector_columns


def device_objects_frame(features: DataFrame, registry: DataFrame, scores: DataFrame | None, hydrated_at: datetime) -> DataFrame:
    """One row per registered device, its columns exactly `DEVICE`'s properties.

    `features` is the `device_features` table (any window sizes), `registry` the `device_registry`
    table, `scores` the anomaly scores (`device_id`, `window_end` and the columns of
    `ANOMALY_SCORE_COLUMNS`; a column a table written before it existed lacks is NULL) or None before
    any exist. Windows and scores ending after `hydrated_at` are not known yet and never count.
    """
    as_of = instant(hydrated_at)
    minutes = DEVICE.feature_window_minutes
    feature_props = DEVICE.from_source("feature")
    latest = (
        features.where((F.col("window_duration_minutes") == minutes) & (F.col("window_end") <= as_of))
        .groupBy("device_id")
        .agg(F.max_by(F.struct("window_end", *[p.feature for p in feature_props]), "window_end").alias("w"))
    )
    rows = registry.join(latest, "device_id", "left")
    if scores is not None:
        score_columns = [(F.col(c) if c in scores.columns else F.lit(None)).alias(c) for c in ANOMALY_SCORE_COLUMNS.values()]
        latest_score = (
            scores.where(F.col("window_end") <= as_of)
            .groupBy("device_id")
            .agg(F.max_by(F.struct(*score_columns), "window_end").alias("_score"))
        )
        rows = rows.join(latest_score, "device_id", "left")
    else:
        rows = rows.withColumn(
            "_score", F.lit(None).cast("struct<" + ",".join(f"{c}:string" for c in ANOMALY_SCORE_COLUMNS.values()) + ">")
        )

    def column(p):
        if p.source == "registry":
            expression = F.col(p.name)
        elif p.source == "feature":
            expression = F.col(f"w.{p.feature}")
        elif p.source == "anomaly_scores":
            expression = F.col(f"_score.{ANOMALY_SCORE_COLUMNS[p.name]}")
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


def vector_first_day(features: DataFrame, model: ModelSpec, hydrated_at: datetime) -> date | None:
    """The first day whose windows a model's vectors are taken from: `VECTOR_LOOKBACK_DAYS` before
    the newest day holding windows of its size (by the hydration day). Read from the partition
    columns alone, so it costs file footers, not a scan of the history."""
    newest = (
        features.where((F.col("window_duration_minutes") == model.window_minutes) & (F.col("window_date") <= F.lit(hydrated_at.date())))
        .agg(F.max("window_date"))
        .first()[0]
    )
    return None if newest is None else newest - timedelta(days=VECTOR_LOOKBACK_DAYS)


def model_vectors_frame(features: DataFrame, objects: DataFrame, model: ModelSpec, hydrated_at: datetime) -> DataFrame:
    """Per served device of `objects` (a `device_objects` snapshot), the model's latest window of
    its size that had closed by `hydrated_at`, as `device_id` and the model's vector columns.

    Only windows of the newest days are read (`vector_first_day`): the scan stays a few
    partitions at any history length, and a device silent for longer than the lookback has no
    current vector (its entry is removed, so a read says None rather than serving old inputs)."""
    as_of = instant(hydrated_at)
    columns = vector_columns(model)
    window = [c for c, _ in columns if c != "hydrated_at"]
    first_day = vector_first_day(features, model, hydrated_at)
    recent = features.where(
        (F.col("window_duration_minutes") == model.window_minutes)
        & (F.col("window_date") >= F.lit(first_day or hydrated_at.date()))
        & (F.col("window_end") <= as_of)
    )
    latest = recent.groupBy("device_id").agg(F.max_by(F.struct(*window), "window_end").alias("v"))
    served = objects.where(F.col("status").isin(*SERVED_STATUSES)).select("device_id")
    return latest.join(served, "device_id", "left_semi").select(
        "device_id", *[(as_of if c == "hydrated_at" else F.col(f"v.{c}")).cast(dtype).alias(c) for c, dtype in columns]
    )
