"""Freshness checks per DESIGN.md's SLAs, as asset checks so that alerts can route them.

The daily assets that are written through the day (clean readings, features) are judged by the
partition that should be current: the day holding `now - SLA`. Its own latest materialization
must be within the SLA, so a backfill of an old day writes an old partition and leaves today
exactly as stale as it was. (Dagster's `build_last_update_freshness_checks` looks at the latest
materialization of any partition, which a backfill would satisfy.)

The results carry the metadata keys Dagster's freshness sensor reads (`dagster/fresh_until_timestamp`),
so `freshness_checks_sensor` re-runs them only when they could have become overdue. The daily
monitoring assets are due a day late: yesterday's complete day by 03:00 UTC (with `end_offset=1`,
Dagster's time-partition builder would expect today's unfinished day).
"""

import time
from datetime import UTC, datetime, timedelta

import dagster as dg

from fs_domain import slas
from fs_domain.features import WINDOWS

SEVERITY = dg.AssetCheckSeverity.ERROR
CHECK_FRESHNESS = "freshness_check"

# Daily assets and the lag past which their current partition pages (fs_domain.slas).
CURRENT_PARTITION_SLAS: dict[str, timedelta] = {
    "clean_sensor_readings": slas.CLEAN_READINGS.alert,
    **{window.asset_name: slas.FEATURES.alert for window in WINDOWS},
}


def _last_update(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> float | None:
    """When `partition` of `key` was last materialized (epoch seconds), or None if never."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
    return records[0].timestamp if records else None


def current_partition_freshness(instance: dg.DagsterInstance, asset: str, sla: timedelta, now: float | None = None) -> dg.AssetCheckResult:
    """Pass when the partition holding `now - sla` was materialized at or after `now - sla`."""
    now = time.time() if now is None else now
    lower_bound = now - sla.total_seconds()
    partition = datetime.fromtimestamp(lower_bound, tz=UTC).date().isoformat()
    key = dg.AssetKey(asset)
    updated = _last_update(instance, key, partition)
    passed = updated is not None and updated >= lower_bound
    metadata: dict[str, object] = {
        "partition": partition,
        "threshold_minutes": round(sla.total_seconds() / 60, 1),
        "dagster/freshness_lower_bound_timestamp": dg.MetadataValue.timestamp(lower_bound),
    }
    if updated is not None:
        metadata["dagster/last_updated_timestamp"] = dg.MetadataValue.timestamp(updated)
        metadata["lag_minutes"] = round((now - updated) / 60, 1)
    if passed:
        # When it could next be overdue: the SLA after this update (the freshness sensor's cue).
        metadata["dagster/fresh_until_timestamp"] = dg.MetadataValue.timestamp(updated + sla.total_seconds())
        description = f"partition {partition} was updated {(now - updated) / 60:.0f} min ago, within {sla.total_seconds() / 60:.0f} min"
    elif updated is None:
        description = f"partition {partition} has never been materialized; it is due within {sla.total_seconds() / 60:.0f} min"
    else:
        description = (
            f"partition {partition} was last updated {(now - updated) / 60:.0f} min ago, over the {sla.total_seconds() / 60:.0f} min SLA"
        )
    return dg.AssetCheckResult(
        asset_key=key, check_name=CHECK_FRESHNESS, passed=passed, severity=SEVERITY, metadata=metadata, description=description
    )


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            CHECK_FRESHNESS,
            asset=asset,
            description=f"The current day's partition was updated within {sla.total_seconds() / 60:.0f} minutes.",
        )
        for asset, sla in CURRENT_PARTITION_SLAS.items()
    ],
    can_subset=True,
    name="current_partition_freshness_checks",
)
def current_partition_freshness_checks(context: dg.AssetCheckExecutionContext):
    now = time.time()
    for check_key in context.selected_asset_check_keys:
        asset = check_key.asset_key.to_user_string()
        yield current_partition_freshness(context.instance, asset, CURRENT_PARTITION_SLAS[asset], now)


# Daily monitoring assets: yesterday's partition (a complete day) by 03:00 UTC today.
MONITORING_DEADLINE_HOUR = slas.DAILY_MONITORING_DUE_HOUR_UTC
MONITORING_ASSETS = ("anomaly_scores", "feature_drift_report")


def completed_day_freshness(instance: dg.DagsterInstance, asset: str, now: float | None = None) -> dg.AssetCheckResult:
    """Pass when the day before the latest 03:00 UTC deadline was materialized after that day ended."""
    now_dt = datetime.fromtimestamp(time.time() if now is None else now, tz=UTC)
    deadline = now_dt.replace(hour=MONITORING_DEADLINE_HOUR, minute=0, second=0, microsecond=0)
    if deadline > now_dt:
        deadline -= timedelta(days=1)
    day = (deadline - timedelta(days=1)).date()
    day_end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    key = dg.AssetKey(asset)
    updated = _last_update(instance, key, day.isoformat())
    passed = updated is not None and updated >= day_end.timestamp()
    metadata: dict[str, object] = {
        "partition": day.isoformat(),
        "deadline": deadline.isoformat(),
        "threshold": f"by {deadline:%Y-%m-%d %H:%M} UTC",
    }
    if updated is not None:
        metadata["dagster/last_updated_timestamp"] = dg.MetadataValue.timestamp(updated)
    if passed:
        metadata["dagster/fresh_until_timestamp"] = dg.MetadataValue.timestamp((deadline + timedelta(days=1)).timestamp())
    verdict = "was materialized" if passed else "was not materialized after its day ended"
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=CHECK_FRESHNESS,
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description=f"partition {day} {verdict}; due by {deadline:%Y-%m-%d %H:%M} UTC",
    )


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(CHECK_FRESHNESS, asset=a, description="Yesterday's partition was materialized by 03:00 UTC.")
        for a in MONITORING_ASSETS
    ],
    can_subset=True,
    name="completed_day_freshness_checks",
)
def completed_day_freshness_checks(context: dg.AssetCheckExecutionContext):
    now = time.time()
    for check_key in context.selected_asset_check_keys:
        yield completed_day_freshness(context.instance, check_key.asset_key.to_user_string(), now)


freshness_checks = [
    current_partition_freshness_checks,
    completed_day_freshness_checks,
    # Online store: pre-hydration lag past its alert (90 minutes) (unpartitioned: the last update is the one that counts).
    *dg.build_last_update_freshness_checks(
        assets=["device_objects", "device_online_store"], lower_bound_delta=slas.DEVICE_OBJECT.alert, severity=SEVERITY
    ),
]
