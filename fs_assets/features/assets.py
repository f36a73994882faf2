"""`device_features_15m`, `device_features_1h`, `device_features_1d`: one factory, one small spec each.

All three write the one `device_features` Delta table (path per feature set version), partitioned by
`window_date` and `window_duration_minutes`, replacing exactly the partitions of the run. With
`BackfillPolicy.single_run()` a UI backfill of any date range is one run and one Spark job per size.
"""

import time
from datetime import UTC, datetime

import dagster as dg
from pyspark.sql import functions as F

from fs_assets.features.compute import window_features
from fs_assets.freshness import freshness_policy
from fs_assets.ingest.assets import clean_sensor_readings
from fs_assets.partitions import daily_partitions
from fs_domain import slas
from fs_domain.features import WINDOWS, Window
from fs_domain.tables import CLEAN_TABLE, FEATURES_TABLE
from fs_resources.delta import DeltaTables
from fs_resources.feature_store import FeatureStoreResource
from fs_resources.schemas import features_column_schema

FEATURES_POOL = f"delta_{FEATURES_TABLE}"

# A feature partition follows its clean-readings partition: when a day of clean readings is
# rewritten (new files, a late file for a past day), that day's features are recomputed. Unlike
# `eager()`, a partition never materialized upstream is not requested, so history is left to
# backfills and a new deployment does not launch a run per day since 2020.
FEATURES_AUTOMATION = (
    dg.AutomationCondition.any_deps_updated().since(dg.AutomationCondition.newly_requested() | dg.AutomationCondition.newly_updated())
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after its clean readings change")


def build_feature_asset(spec: Window) -> dg.AssetsDefinition:
    """The features asset of one window size of the registry."""

    @dg.asset(
        name=spec.asset_name,
        group_name="features",
        kinds={"spark", "delta"},
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[clean_sensor_readings],
        pool=FEATURES_POOL,
        freshness_policy=freshness_policy(slas.FEATURES),
        automation_condition=FEATURES_AUTOMATION,
        description=f"Features of {spec.minutes}-minute tumbling windows (aligned to midnight UTC), one row per device and window.",
        metadata={
            "dagster/column_schema": features_column_schema(),
            "window_duration_minutes": spec.minutes,
            "delta_table": FEATURES_TABLE,
        },
    )
    def _feature_asset(context: dg.AssetExecutionContext, delta: DeltaTables, feature_store: FeatureStoreResource) -> dg.MaterializeResult:
        started = time.monotonic()
        days = list(context.partition_keys)
        version = feature_store.version()
        clean, clean_version = delta.read_pinned(CLEAN_TABLE)
        clean = clean.where(F.col("reading_date").isin(days))
        features = window_features(clean, spec.minutes, version, datetime.now(UTC)).cache()
        summary = features.agg(
            F.count(F.lit(1)).alias("rows"), F.countDistinct("device_id").alias("devices"), F.max("window_end").alias("latest")
        ).first()
        write = delta.replace_partitions(
            features,
            feature_store.features_table(),
            {"window_date": days, "window_duration_minutes": [spec.minutes]},
            run_id=context.run_id,
            inputs={CLEAN_TABLE: clean_version},
        )
        features.unpersist()
        context.log.info(f"{spec.asset_name}: {summary['rows']:,} rows for {summary['devices']:,} devices over {len(days)} day(s)")
        return dg.MaterializeResult(
            metadata=write.metadata()
            | {
                "devices": summary["devices"] or 0,
                "feature_set_version": version,
                "window_duration_minutes": spec.minutes,
                "days": len(days),
                "latest_window_end": summary["latest"].isoformat() if summary["latest"] else "none",
                "seconds": round(time.monotonic() - started, 2),
            }
        )

    return _feature_asset


feature_assets = [build_feature_asset(window) for window in WINDOWS]
device_features_15m, device_features_1h, device_features_1d = feature_assets
