"""Checks on the feature assets: schema, keys, look-back only, coverage, backfill completeness, freshness.

Each judges what the run read and wrote: the clean table at the version the run read, and only the
windows closed when it ran (recorded in its materialization). A day in progress passes every check
whose data is right: its open windows are neither written nor expected.
"""

from datetime import UTC, datetime

import dagster as dg
from pyspark.sql import functions as F

from fs_assets.features import touched
from fs_assets.features.windows import MICROS_PER_MINUTE, closed_until, with_window
from fs_assets.metadata import latest_key
from fs_assets.partitions import daily_partitions
from fs_domain.features import Window
from fs_domain.tables import CLEAN_TABLE, REGISTRY_TABLE
from fs_resources.delta import DeltaTables
from fs_resources.feature_store import FeatureStoreResource
from fs_resources.schemas import features_spark_schema

CHECK_SCHEMA = "check_feature_schema"
CHECK_KEY_UNIQUE = "check_feature_key_unique"
CHECK_LOOKS_BACKWARD = "check_windows_look_backward"
CHECK_COVERAGE = "check_feature_coverage"
CHECK_BACKFILL = "check_backfill_completeness"

# Device coverage of the latest window against active registry devices (DESIGN.md, monitoring).
COVERAGE_TARGET = 0.99
COVERAGE_ALERT = 0.95


def build_feature_checks(window: Window) -> list[dg.AssetChecksDefinition]:
    """The checks of one feature asset (one window size), each over the partitions its run wrote."""
    asset = dg.AssetKey(window.asset_name)
    minutes = window.minutes

    def written(context, delta: DeltaTables, feature_store: FeatureStoreResource):
        days = list(context.partition_keys)
        table = delta.read(feature_store.features_table())
        return table, table.where(F.col("window_date").isin(days) & (F.col("window_duration_minutes") == minutes)), days

    def as_run(context, delta: DeltaTables):
        """The clean readings the run read and the time it ran (what a window had to end by to be written)."""
        event = context.instance.get_latest_materialization_event(asset)
        md = event.asset_materialization.metadata if event and event.asset_materialization else {}
        if touched.CLEAN_VERSION_KEY in md and touched.COMPUTED_AT_KEY in md:
            clean = delta.read(CLEAN_TABLE, version=int(md[touched.CLEAN_VERSION_KEY].value))
            return clean, datetime.fromisoformat(str(md[touched.COMPUTED_AT_KEY].value))
        return delta.read(CLEAN_TABLE), datetime.now(UTC)

    def judged_span(context, rows, days: list[str], ran_at: datetime, version: str) -> tuple[datetime, datetime] | None:
        """[lo, hi) of the windows a one-day run is judged on: from the end of the newest window the
        previous run of the day had written (or the first window this run rewrote, if earlier) to
        the end of the last window closed when it ran. None (judge the days whole) for a run of
        several days, the day's first run, or one after another feature set version's."""
        if len(days) != 1:
            return None
        filters = dg.AssetRecordsFilter(asset_key=asset, asset_partitions=days)
        records = context.instance.fetch_materializations(filters, limit=2).records
        if len(records) < 2 or records[1].asset_materialization is None:
            return None
        previous = records[1].asset_materialization.metadata
        latest = previous.get(latest_key("window_end"))
        same_version = previous.get(touched.VERSION_KEY) is not None and previous[touched.VERSION_KEY].value == version
        if latest is None or latest.value == "none" or not same_version:
            return None
        lo = datetime.fromisoformat(str(latest.value)).replace(tzinfo=UTC)
        rewritten = rows.where(F.col("computed_at") == at(ran_at)).agg(F.min(F.unix_micros("window_start"))).first()[0]
        if rewritten is not None:
            lo = min(lo, datetime.fromtimestamp(rewritten / 1_000_000, tz=UTC))
        return lo, closed_until(ran_at.astimezone(UTC), minutes)

    def at(moment: datetime) -> F.Column:
        return F.lit(moment.strftime("%Y-%m-%d %H:%M:%S.%f")).cast("timestamp")

    def closed(start: F.Column, cutoff: datetime) -> F.Column:
        end = F.timestamp_micros(F.unix_micros(start) + F.lit(minutes * MICROS_PER_MINUTE))
        return end <= at(cutoff)

    @dg.asset_check(
        asset=asset,
        name=CHECK_SCHEMA,
        partitions_def=daily_partitions,
        blocking=True,
        description="The table's columns and types equal the feature registry's.",
    )
    def check_feature_schema(
        context: dg.AssetCheckExecutionContext, delta: DeltaTables, feature_store: FeatureStoreResource
    ) -> dg.AssetCheckResult:
        table, _, _ = written(context, delta, feature_store)
        expected = [(f.name, f.dataType.simpleString()) for f in features_spark_schema(feature_store.version()).fields]
        actual = [(f.name, f.dataType.simpleString()) for f in table.schema.fields]
        missing = [c for c in expected if c not in actual]
        unexpected = [c for c in actual if c not in expected]
        return dg.AssetCheckResult(
            passed=expected == actual,
            metadata={
                "columns": len(actual),
                "missing": dg.MetadataValue.json(missing),
                "unexpected": dg.MetadataValue.json(unexpected),
                "order_matches": [c[0] for c in expected] == [c[0] for c in actual],
            },
        )

    @dg.asset_check(
        asset=asset,
        name=CHECK_KEY_UNIQUE,
        partitions_def=daily_partitions,
        blocking=True,
        description="One row per (device_id, window_start, window_duration_minutes).",
    )
    def check_feature_key_unique(
        context: dg.AssetCheckExecutionContext, delta: DeltaTables, feature_store: FeatureStoreResource
    ) -> dg.AssetCheckResult:
        _, rows, days = written(context, delta, feature_store)
        dupes = rows.groupBy("device_id", "window_start").count().where("count > 1").count()
        return dg.AssetCheckResult(passed=dupes == 0, metadata={"duplicate_keys": dupes, "partitions": ", ".join(days)})

    @dg.asset_check(
        asset=asset,
        name=CHECK_LOOKS_BACKWARD,
        partitions_def=daily_partitions,
        blocking=True,
        description="window_end <= computed_at, windows are aligned and sized, and reading_count equals the clean readings inside "
        "[window_start, window_end) for every window closed when the run ran. After an earlier run of the same day, only the "
        "windows closed since it and any the run rewrote (late data); otherwise the days whole.",
    )
    def check_windows_look_backward(
        context: dg.AssetCheckExecutionContext, delta: DeltaTables, feature_store: FeatureStoreResource
    ) -> dg.AssetCheckResult:
        _, rows, days = written(context, delta, feature_store)
        future = rows.where(F.col("window_end") > F.col("computed_at")).count()
        misshapen = rows.where(
            (F.unix_seconds("window_end") - F.unix_seconds("window_start") != minutes * 60)
            | (F.unix_seconds("window_start") % (minutes * 60) != 0)
            | (F.to_date("window_start") != F.col("window_date"))
        ).count()
        clean, ran_at = as_run(context, delta)
        readings = clean.where(F.col("reading_date").isin(days))
        span = judged_span(context, rows, days, ran_at, feature_store.version())
        scope = "whole partitions"
        if span is not None:
            # Earlier windows were judged by the runs that wrote them: only the readings of the span
            # are counted again (Delta skips the day's other files by their ts statistics), so the
            # check costs what the run wrote, not the hour of the day.
            lo, hi = span
            rows = rows.where((F.col("window_start") >= at(lo)) & (F.col("window_end") <= at(hi)))
            readings = readings.where((F.col("ts") >= at(lo)) & (F.col("ts") < at(hi)))
            scope = f"windows from {lo:%Y-%m-%d %H:%M} to {hi:%Y-%m-%d %H:%M}: those closed since the previous run, and any it rewrote"
        inside = (
            with_window(readings.select("device_id", "ts"), minutes)
            .where(closed(F.col("window_start"), ran_at))
            .groupBy("device_id", "window_start")
            .agg(F.count(F.lit(1)).alias("inside"))
        )
        mismatched = (
            rows.select("device_id", "window_start", "reading_count")
            .join(inside, on=["device_id", "window_start"], how="full_outer")
            .where(~F.col("reading_count").eqNullSafe(F.col("inside")))
            .count()
        )
        return dg.AssetCheckResult(
            passed=future == 0 and misshapen == 0 and mismatched == 0,
            metadata={
                "windows_ending_after_computed_at": future,
                "misaligned_windows": misshapen,
                "windows_with_outside_inputs": mismatched,
                "judged_windows_closed_by": ran_at.isoformat(),
                "scope": scope,
            },
        )

    @dg.asset_check(
        asset=asset,
        name=CHECK_COVERAGE,
        partitions_def=daily_partitions,
        description=f"Devices with features in the latest window vs active devices: warn below {COVERAGE_TARGET:.0%}, error below {COVERAGE_ALERT:.0%}.",
    )
    def check_feature_coverage(
        context: dg.AssetCheckExecutionContext, delta: DeltaTables, feature_store: FeatureStoreResource
    ) -> dg.AssetCheckResult:
        _, rows, days = written(context, delta, feature_store)
        _, ran_at = as_run(context, delta)
        latest = rows.agg(F.max("window_start")).first()[0]
        first_end = datetime.fromisoformat(min(days)).replace(tzinfo=UTC).timestamp() + minutes * 60
        if latest is None and ran_at.timestamp() < first_end:
            return dg.AssetCheckResult(
                passed=True,
                metadata={"latest_window_start": "none", "note": f"no {minutes}-minute window of the day had closed when the run ran"},
            )
        active = delta.read(REGISTRY_TABLE).where("status = 'active'").select("device_id")
        n_active = active.count()
        covered = (
            0
            if latest is None
            else rows.where(F.col("window_start") == latest).join(active, "device_id").select("device_id").distinct().count()
        )
        coverage = covered / n_active if n_active else 0.0
        severity = dg.AssetCheckSeverity.ERROR if coverage < COVERAGE_ALERT else dg.AssetCheckSeverity.WARN
        return dg.AssetCheckResult(
            passed=coverage >= COVERAGE_TARGET,
            severity=severity,
            metadata={
                "coverage": dg.MetadataValue.float(round(coverage, 6)),
                "covered_devices": covered,
                "active_devices": n_active,
                "latest_window_start": latest.isoformat() if latest else "none",
                "warn_below": COVERAGE_TARGET,
                "error_below": COVERAGE_ALERT,
            },
        )

    @dg.asset_check(
        asset=asset,
        name=CHECK_BACKFILL,
        partitions_def=daily_partitions,
        description="Every day of the run with clean readings in a closed window has feature rows (no date gaps).",
    )
    def check_backfill_completeness(
        context: dg.AssetCheckExecutionContext, delta: DeltaTables, feature_store: FeatureStoreResource
    ) -> dg.AssetCheckResult:
        _, rows, days = written(context, delta, feature_store)
        clean, ran_at = as_run(context, delta)
        with_readings = {
            r[0].isoformat()
            for r in with_window(clean.where(F.col("reading_date").isin(days)), minutes)
            .where(closed(F.col("window_start"), ran_at))
            .select("reading_date")
            .distinct()
            .collect()
        }
        with_features = {r[0].isoformat() for r in rows.select("window_date").distinct().collect()}
        gaps = sorted(with_readings - with_features)
        return dg.AssetCheckResult(
            passed=not gaps,
            metadata={"days_in_run": len(days), "days_with_readings": len(with_readings), "missing_days": dg.MetadataValue.json(gaps)},
        )

    return [
        check_feature_schema,
        check_feature_key_unique,
        check_windows_look_backward,
        check_feature_coverage,
        check_backfill_completeness,
    ]
