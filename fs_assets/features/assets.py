"""`device_features_15m`, `device_features_1h`, `device_features_1d`: one factory, one small spec each.

All three write the one `device_features` Delta table (path per feature set version), partitioned by
`window_date` and `window_duration_minutes`, replacing exactly the partitions of the run. With
`BackfillPolicy.single_run()` a UI backfill of any date range is one run and one Spark job per size.
"""

import time
from dataclasses import dataclass
from datetime import datetime, timezone

import dagster as dg
from pyspark.sql import functions as F

from fs_assets.features.compute import window_features
from fs_assets.features.registry import table_schema_metadata
from fs_assets.ingest.assets import clean_sensor_readings
from fs_assets.partitions import daily_partitions
from fs_checks.feature_checks import FEATURES_FRESHNESS
from fs_checks.ingest_checks import CLEAN_TABLE
from fs_resources.delta import DeltaTables
from fs_resources.feature_store import FEATURES_TABLE, FeatureStoreResource
from fs_resources.spark import DeltaSparkResource

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


@dataclass(frozen=True)
class WindowSpec:
    suffix: str
    minutes: int

    @property
    def asset_name(self) -> str:
        return f"device_features_{self.suffix}"


WINDOW_SPECS: tuple[WindowSpec, ...] = (WindowSpec("15m", 15), WindowSpec("1h", 60), WindowSpec("1d", 1440))


def build_feature_asset(spec: WindowSpec) -> dg.AssetsDefinition:
    @dg.asset(
        name=spec.asset_name,
        group_name="features",
        kinds={"spark", "delta"},
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[clean_sensor_readings],
        pool=FEATURES_POOL,
        freshness_policy=FEATURES_FRESHNESS,
        automation_condition=FEATURES_AUTOMATION,
        description=f"Features of {spec.minutes}-minute tumbling windows (aligned to midnight UTC), one row per device and window.",
        metadata={
            "dagster/column_schema": table_schema_metadata(),
            "window_duration_minutes": spec.minutes,
            "delta_table": FEATURES_TABLE,
        },
    )
    def _feature_asset(context: dg.AssetExecutionContext, spark: DeltaSparkResource, delta: DeltaTables, feature_store: FeatureStoreResource) -> dg.MaterializeResult:
        started = time.monotonic()
        days = list(context.partition_keys)
        session = spark.spark_session
        version = feature_store.version()
        clean = delta.read(session, CLEAN_TABLE).where(F.col("reading_date").isin(days))
        features = window_features(clean, spec.minutes, version, datetime.now(timezone.utc)).cache()
        summary = features.agg(F.count(F.lit(1)).alias("rows"), F.countDistinct("device_id").alias("devices"), F.max("window_end").alias("latest")).first()
        write = delta.replace_partitions(
            session, features, feature_store.features_table(), {"window_date": days, "window_duration_minutes": [spec.minutes]}
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


feature_assets = [build_feature_asset(spec) for spec in WINDOW_SPECS]
device_features_15m, device_features_1h, device_features_1d = feature_assets
