"""Freshness of the daily monitoring assets, and every freshness check the sensor runs.

`anomaly_scores` and `feature_drift_report` judge a complete day: yesterday's partition is due by
03:00 UTC today (with `end_offset=1`, Dagster's time-partition builder would expect today's
unfinished day). The lag is how long the due day has waited for its partition since the day
ended; a partition written after its day ended counts, one written during the day does not (it
judged part of a day). These checks warn and never page: the scores and the drift report wait on
the features, whose own clocks page first.

Clean readings, features and the `Device` object are judged by data time alone
(`fs_checks.data_freshness_checks`, whose docstring says why no run-based check judges them too).
The online store's projection age is `check_prehydration_lag`.
"""

import time
from datetime import UTC, datetime, timedelta

import dagster as dg

from fs_checks.data_freshness_checks import FRESH_UNTIL, data_time_freshness_checks
from fs_checks.results import check_result
from fs_domain import slas
from fs_domain.verdicts import Verdict, guide_section

CHECK_FRESHNESS = "freshness_check"
GUIDE_MONITORING = "Freshness: daily monitoring"

# Daily monitoring assets: yesterday's partition (a complete day) by 03:00 UTC today.
MONITORING_DEADLINE_HOUR = slas.DAILY_MONITORING_DUE_HOUR_UTC
MONITORING_ASSETS = ("anomaly_scores", "feature_drift_report")


def _last_update(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> float | None:
    """When `partition` of `key` was last materialized (epoch seconds), or None if never."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
    return records[0].timestamp if records else None


def completed_day_freshness(
    instance: dg.DagsterInstance, asset: str, now: float | None = None, context: dg.AssetCheckExecutionContext | None = None
) -> dg.AssetCheckResult:
    """Pass when the day before the latest 03:00 UTC deadline was materialized after that day ended."""
    now_dt = datetime.fromtimestamp(time.time() if now is None else now, tz=UTC)
    deadline = now_dt.replace(hour=MONITORING_DEADLINE_HOUR, minute=0, second=0, microsecond=0)
    if deadline > now_dt:
        deadline -= timedelta(days=1)
    day = (deadline - timedelta(days=1)).date()
    day_end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    allowed = deadline - day_end
    key = dg.AssetKey(asset)
    updated = _last_update(instance, key, day.isoformat())
    written = updated is not None and updated >= day_end.timestamp()
    lag = timedelta(0) if written else now_dt - day_end
    verdict = Verdict(
        observed=round(lag.total_seconds() / 60, 1),
        threshold=allowed.total_seconds() / 60,
        comparison="<=",
        unit="minutes",
        what_to_do=(
            f"did {asset}'s run for {day} fail or never start (the automation sensor, a promoted reference)? "
            f"{guide_section(GUIDE_MONITORING)}"
        ),
        asset=asset,
        partition=day.isoformat(),
    )
    metadata: dict[str, object] = {"deadline": deadline.isoformat(), "lag_minutes": verdict.observed}
    if updated is not None:
        metadata["dagster/last_updated_timestamp"] = dg.MetadataValue.timestamp(updated)
    if written:
        metadata[FRESH_UNTIL] = dg.MetadataValue.timestamp((deadline + timedelta(days=1)).timestamp())
    state = "was written" if written else "was not written after its day ended"
    return check_result(
        verdict,
        context=context,
        passed=written,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description=f"partition {day} {state}; due by {deadline:%Y-%m-%d %H:%M} UTC: {verdict.sentence()}",
        asset_key=key,
        check_name=CHECK_FRESHNESS,
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
        yield completed_day_freshness(context.instance, check_key.asset_key.to_user_string(), now, context)


# What the freshness sensor runs, besides `data_time_freshness_checks`.
freshness_checks = [completed_day_freshness_checks]
ALL_FRESHNESS_CHECKS = [*freshness_checks, data_time_freshness_checks]
