"""`device_features_15m`, `device_features_1h`, `device_features_1d`: one factory, one small spec each.

All three write the one `device_features` Delta table (path per feature set version), partitioned by
`window_date` and `window_duration_minutes`: every version the deployment serves (its own, and each
one a model is pinned to) in the same run, from the same clean readings, each to its own table. A
day's first run of a version (or a `full: true` run) replaces the day's partition whole; later runs
MERGE only the windows touched since (`fs_assets.features.touched`).
"""

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field
from pyspark import StorageLevel
from pyspark.sql import functions as F

from fs_assets.features import touched
from fs_assets.features.compute import window_features
from fs_assets.features.windows import window_end, window_start
from fs_assets.freshness import freshness_policy
from fs_assets.ingest.assets import clean_sensor_readings
from fs_assets.metadata import latest_key, latest_value
from fs_assets.partitions import daily_backfill_policy, daily_partitions
from fs_assets.timestamps import instant
from fs_domain import slas, tables
from fs_domain.features import WINDOWS, Window
from fs_domain.tables import CLEAN_TABLE, FEATURES_TABLE
from fs_resources import change_feed
from fs_resources.delta import DeltaTables, replace_where_predicate
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


class FeaturesConfig(dg.Config):
    full: bool = Field(
        default=False,
        description="Recompute the run's days whole, instead of only the windows touched since the previous run of each day.",
    )


def build_feature_asset(spec: Window) -> dg.AssetsDefinition:
    """The features asset of one window size of the registry."""

    @dg.asset(
        name=spec.asset_name,
        group_name="features",
        kinds={"spark", "delta"},
        partitions_def=daily_partitions,
        backfill_policy=daily_backfill_policy,
        deps=[clean_sensor_readings],
        pool=FEATURES_POOL,
        freshness_policy=freshness_policy(slas.FEATURES),
        automation_condition=FEATURES_AUTOMATION,
        description=f"Features of {spec.minutes}-minute tumbling windows (aligned to midnight UTC), one row per device and closed window. "
        "A day's first run computes it whole; later runs recompute only the windows new readings touched or that closed since.",
        metadata={
            "dagster/column_schema": features_column_schema(),
            "window_duration_minutes": spec.minutes,
            "delta_table": FEATURES_TABLE,
        },
    )
    def _feature_asset(
        context: dg.AssetExecutionContext, config: FeaturesConfig, delta: DeltaTables, feature_store: FeatureStoreResource
    ) -> dg.MaterializeResult:
        started = time.monotonic()
        now = datetime.now(UTC)
        days = list(context.partition_keys)
        # Read before the version: a table created anew in between is then recorded under its old
        # id, and the next run recomputes whole rather than trust a version of another table.
        clean_table = change_feed.table_identity(delta, CLEAN_TABLE)
        clean, clean_version = delta.read_pinned(CLEAN_TABLE)
        # Every version the deployment serves, from the same clean readings: a model pinned to v2
        # is validated on v2's features while the others keep reading v1's, each in its own table.
        deployed = feature_store.version()
        runs = {
            version: _write_version(context, config, delta, spec, version, clean, clean_version, clean_table, now)
            for version in feature_store.versions()
        }
        primary = runs[deployed]
        context.log.info(
            "; ".join(
                f"{spec.asset_name} {v}: {r.rows_written:,} rows written, {r.summary['rows']:,} rows for {len(days)} day(s)"
                for v, r in runs.items()
            )
        )
        return dg.MaterializeResult(
            metadata=(primary.write.metadata() if primary.write else {})
            | {
                "dagster/row_count": primary.summary["rows"],
                "rows_written": primary.rows_written,
                "devices": primary.summary["devices"] or 0,
                "recomputed": dg.MetadataValue.json(primary.plan.why),
                "windows_recomputed": primary.windows_recomputed if primary.windows_recomputed is not None else "all (whole days)",
                touched.VERSION_KEY: deployed,
                touched.CLEAN_VERSION_KEY: clean_version,
                touched.CLEAN_TABLE_ID_KEY: clean_table.table_id,
                touched.CLEAN_FEED_KEY: clean_table.change_feed,
                touched.FALLBACK_KEY: dg.MetadataValue.json(primary.plan.fallback),
                touched.COMPUTED_AT_KEY: now.isoformat(),
                touched.VERSIONS_KEY: dg.MetadataValue.json({v: r.record(clean_version, clean_table, now) for v, r in runs.items()}),
                "window_duration_minutes": spec.minutes,
                "days": len(days),
                latest_key("window_end"): latest_value(primary.summary["latest"]),
                "seconds": round(time.monotonic() - started, 2),
            }
        )

    return _feature_asset


@dataclass
class VersionRun:
    """What one features run did to one feature set version's table."""

    plan: touched.Plan
    write: object
    rows_written: int
    windows_recomputed: int | None
    summary: dict

    def record(self, clean_version: int, clean_table, now: datetime) -> dict:
        """What the next run of the day needs to recompute only what changed since (`touched.previous_run`)."""
        return {
            touched.CLEAN_VERSION_KEY: clean_version,
            touched.CLEAN_TABLE_ID_KEY: clean_table.table_id,
            touched.CLEAN_FEED_KEY: clean_table.change_feed,
            touched.COMPUTED_AT_KEY: now.isoformat(),
            "rows_written": self.rows_written,
            "rows": self.summary["rows"],
            latest_key("window_end"): latest_value(self.summary["latest"]),
        }


def _write_version(context, config, delta, spec: Window, version, clean, clean_version, clean_table, now) -> VersionRun:
    """One version's features of the run's days: whole days replaced, touched windows merged."""
    days = list(context.partition_keys)
    table = tables.features_table(version)
    plan = touched.plan(
        context.instance, context.asset_key, days, version, config.full or not delta.exists(table),
        delta=delta, table=CLEAN_TABLE, current=clean_table, clean_version=clean_version,
    )  # fmt: skip
    for day in plan.fallback:
        context.log.warning(f"{spec.asset_name} {version} {day}: {plan.why[day]}")
    keys = touched.touched_windows(delta, CLEAN_TABLE, clean, clean_version, plan, spec.minutes, now) if plan.incremental_days else None
    inputs = {CLEAN_TABLE: clean_version}
    write = None
    rows_written = 0
    if plan.full_days:
        features = window_features(clean.where(F.col("reading_date").isin(plan.full_days)), spec.minutes, version, now)
        write = delta.replace_partitions(
            features, table, {"window_date": plan.full_days, "window_duration_minutes": [spec.minutes]},
            run_id=context.run_id, inputs=inputs,
        )  # fmt: skip
        rows_written += write.rows_written
    windows_recomputed = None
    if plan.incremental_days:
        keys = keys.persist(StorageLevel.MEMORY_AND_DISK)
        windows_recomputed = keys.count()
        if windows_recomputed:  # none on a day in progress when no window of this size closed or changed
            write = _merge_touched(delta, table, clean, keys, plan.incremental_days, spec.minutes, version, now, context.run_id, inputs)
            rows_written += write.metric("numTargetRowsInserted") + write.metric("numTargetRowsUpdated")
        keys.unpersist()
    summary = (
        delta.read(table)
        .where(F.col("window_date").isin(days) & (F.col("window_duration_minutes") == spec.minutes))
        .agg(F.count(F.lit(1)).alias("rows"), F.countDistinct("device_id").alias("devices"), F.max("window_end").alias("latest"))
        .first()
        .asDict()
    )
    return VersionRun(plan, write, rows_written, windows_recomputed, summary)


def _merge_touched(delta, table, clean, keys, days, minutes, version, now, run_id, inputs):
    """Recompute the touched windows' features and MERGE them in; a touched window left without readings is deleted."""
    # The touched windows' time span bounds the readings read: Delta skips the day's other files by
    # their ts statistics, so on a day in progress a run reads what it recomputes, not the whole day.
    span = keys.agg(F.min("window_start").alias("first"), F.max("window_start").alias("last")).first()
    in_span = (
        (F.col("ts") >= F.lit(span["first"])) & (F.col("ts") < F.lit(span["last"] + timedelta(minutes=minutes)))
        if span["first"] is not None
        else F.lit(False)
    )
    readings = (
        clean.where(F.col("reading_date").isin(days) & in_span)
        .withColumn("window_start", window_start(F.col("ts"), minutes))
        .join(keys, on=["device_id", "window_start"], how="left_semi")
        .drop("window_start")
    )
    fresh = window_features(readings, minutes, version, now)
    closed = keys.where(window_end(F.col("window_start"), minutes) <= instant(now))
    source = closed.join(fresh, on=["device_id", "window_start"], how="left").withColumn("_gone", F.col("window_date").isNull())
    partitions = replace_where_predicate({"t.window_date": days, "t.window_duration_minutes": [minutes]})
    on = f"{partitions} AND t.device_id = s.device_id AND t.window_start = s.window_start"
    return delta.merge(source, table, on, delete_when="s._gone", run_id=run_id, inputs=inputs)


feature_assets = [build_feature_asset(window) for window in WINDOWS]
device_features_15m, device_features_1h, device_features_1d = feature_assets
