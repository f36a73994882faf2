"""Freshness by data time (DESIGN.md's expectation), beside the run-based policies.

A run can succeed on time and still serve old data (a gateway stopped sending, a landing folder
went quiet). These checks look at the data itself:
- clean readings: `now - max(ts)`, against 15 minutes;
- features, per window size: how long the first window after the newest one written has been
  closed, `now - (max(window_end) + window)`, warn past 30 minutes and page past 45 (a window's
  features cannot exist before it closes, so a 1-day window is not late at noon);
- the Device object: `now - max(features_window_end)`, warn past 60 minutes and page past 90.
The newest value is the one each asset recorded when it wrote (`latest_<column>` in its
materialization's metadata, read back from the table after the write; `fs_assets.metadata`), taken
over the latest materialization of today's and yesterday's partitions. So a check reads the
instance, not the tables: it needs no Spark session, and its run takes seconds instead of holding
one of the run slots for a JVM's start and a Delta scan (under the design fleet's live load these
runs took a fifth of the slots).
"""

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg

from fs_assets.features.touched import VERSION_KEY
from fs_assets.metadata import latest_key
from fs_domain import slas
from fs_domain.features import WINDOWS
from fs_domain.slas import Sla
from fs_resources.feature_store import FeatureStoreResource

CHECK_DATA_FRESHNESS = "data_freshness_check"


@dataclass(frozen=True)
class DataClock:
    """An asset's data time: the column (its newest value recorded as `latest_<column>`), and whether
    the asset is partitioned by day (`date_column`), so today's and yesterday's partitions count."""

    sla: Sla
    column: str
    date_column: str | None = None
    window_minutes: int | None = None


DATA_CLOCKS: dict[str, DataClock] = {
    "clean_sensor_readings": DataClock(slas.CLEAN_READINGS, "ts", "reading_date"),
    **{w.asset_name: DataClock(slas.FEATURES, "window_end", "window_date", w.minutes) for w in WINDOWS},
    "device_objects": DataClock(slas.DEVICE_OBJECT, "features_window_end"),
}


def judge(asset: str, clock: DataClock, latest: datetime | None, now: float) -> dg.AssetCheckResult:
    """Passed within the target (or the alert when there is none); WARN past the target, ERROR past the alert."""
    key = dg.AssetKey(asset)
    if latest is None:
        return dg.AssetCheckResult(
            asset_key=key, check_name=CHECK_DATA_FRESHNESS, passed=False, severity=dg.AssetCheckSeverity.ERROR,
            description=f"no data in the last two days ({clock.column})",
            metadata={"latest": "none", "alert_minutes": clock.sla.alert.total_seconds() / 60},
        )  # fmt: skip
    latest = latest.replace(tzinfo=UTC) if latest.tzinfo is None else latest
    waiting_since = latest + timedelta(minutes=clock.window_minutes or 0)  # for features: when the next window closed
    lag = max(timedelta(0), timedelta(seconds=now - waiting_since.timestamp()))
    limit = clock.sla.target or clock.sla.alert
    severity = dg.AssetCheckSeverity.ERROR if lag > clock.sla.alert else dg.AssetCheckSeverity.WARN
    metadata = {
        "latest": latest.isoformat(),
        "lag_minutes": round(lag.total_seconds() / 60, 1),
        "alert_minutes": clock.sla.alert.total_seconds() / 60,
        "dagster/last_updated_timestamp": dg.MetadataValue.timestamp(latest.timestamp()),
    }
    if clock.sla.target:
        metadata["target_minutes"] = clock.sla.target.total_seconds() / 60
    if lag <= limit:
        metadata["dagster/fresh_until_timestamp"] = dg.MetadataValue.timestamp(waiting_since.timestamp() + limit.total_seconds())
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=CHECK_DATA_FRESHNESS,
        passed=lag <= limit,
        severity=severity,
        metadata=metadata,
        description=f"newest {clock.column} {latest:%Y-%m-%d %H:%M}: {lag.total_seconds() / 60:.0f} min behind (limit {limit.total_seconds() / 60:.0f} min)",
    )


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            CHECK_DATA_FRESHNESS,
            asset=asset,
            description=("how long the next window has been closed, " if clock.window_minutes else f"now - max({clock.column}), ")
            + f"within {(clock.sla.target or clock.sla.alert).total_seconds() / 60:.0f} min"
            + (f"; pages past {clock.sla.alert.total_seconds() / 60:.0f} min" if clock.sla.target else ""),
        )
        for asset, clock in DATA_CLOCKS.items()
    ],
    can_subset=True,
    name="data_time_freshness_checks",
)
def data_time_freshness_checks(context: dg.AssetCheckExecutionContext, feature_store: FeatureStoreResource):
    now = time.time()
    today = datetime.fromtimestamp(now, tz=UTC).date()
    days = [(today - timedelta(days=1)).isoformat(), today.isoformat()]
    version = feature_store.version()
    for check_key in context.selected_asset_check_keys:
        asset = check_key.asset_key.to_user_string()
        clock = DATA_CLOCKS[asset]
        yield judge(asset, clock, recorded_latest(context.instance, check_key.asset_key, clock, days, version), now)


def recorded_latest(instance: dg.DagsterInstance, key: dg.AssetKey, clock: DataClock, days: list[str], version: str) -> datetime | None:
    """The newest `clock.column` the asset recorded over its latest materialization of each of `days`
    (of its one latest materialization when unpartitioned), for the current feature set version."""
    partitions = days if clock.date_column else [None]
    latest = None
    for partition in partitions:
        filters = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None)
        records = instance.fetch_materializations(filters, limit=1).records
        md = records[0].asset_materialization.metadata if records and records[0].asset_materialization else {}
        recorded = md.get(latest_key(clock.column))
        if recorded is None or recorded.value == "none" or (VERSION_KEY in md and md[VERSION_KEY].value != version):
            continue
        value = datetime.fromisoformat(str(recorded.value))
        latest = value if latest is None or value > latest else latest
    return latest
