"""Freshness is judged per partition: a backfill of an old day never makes today look fresh."""

import time
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from fs_checks.freshness_checks import (
    CURRENT_PARTITION_SLAS,
    completed_day_freshness,
    completed_day_freshness_checks,
    current_partition_freshness,
    current_partition_freshness_checks,
)

SLA = CURRENT_PARTITION_SLAS["device_features_1h"]


def today(now: float, asset: str = "device_features_1h") -> str:
    """The asset's current partition at `now`: the day holding `now - SLA` (near midnight it depends on the SLA)."""
    return datetime.fromtimestamp(now - CURRENT_PARTITION_SLAS[asset].total_seconds(), tz=timezone.utc).date().isoformat()


def materialized(instance, asset: str, partition: str) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, partition=partition))


@pytest.mark.unit
def test_a_backfilled_old_day_leaves_the_current_partition_stale_and_a_current_write_makes_it_fresh():
    with dg.instance_for_test() as instance:
        materialized(instance, "device_features_1h", "2026-01-05")  # a backfill of an old day, just now
        now = time.time()
        stale = current_partition_freshness(instance, "device_features_1h", SLA, now)
        assert not stale.passed and stale.metadata["partition"].value == today(now)
        assert "never been materialized" in stale.description

        materialized(instance, "device_features_1h", today(time.time()))
        now = time.time()
        fresh = current_partition_freshness(instance, "device_features_1h", SLA, now)
        assert fresh.passed, fresh.description
        fresh_until = fresh.metadata["dagster/fresh_until_timestamp"].value
        assert now < fresh_until <= now + SLA.total_seconds()

        # A write seen after the SLA has run out: overdue, with how late in the metadata. The write is
        # of the partition current then (near midnight, a later day than the one above).
        later = fresh_until + 60
        materialized(instance, "device_features_1h", today(later))
        later = time.time() + SLA.total_seconds() + 60
        overdue = current_partition_freshness(instance, "device_features_1h", SLA, later)
        assert not overdue.passed and overdue.metadata["lag_minutes"].value > SLA.total_seconds() / 60
        assert overdue.severity == dg.AssetCheckSeverity.ERROR


@pytest.mark.unit
def test_daily_monitoring_is_due_the_complete_day_before_the_three_oclock_deadline():
    with dg.instance_for_test() as instance:
        now = time.time()
        # The day before the date of (now - 3 h): at 02:00 on the 10th the 8th is due, at 04:00 the 9th.
        due = (datetime.fromtimestamp(now, tz=timezone.utc) - timedelta(hours=3)).date() - timedelta(days=1)
        assert not completed_day_freshness(instance, "anomaly_scores", now).passed
        materialized(instance, "anomaly_scores", (due + timedelta(days=1)).isoformat())  # today's unfinished day does not count
        assert not completed_day_freshness(instance, "anomaly_scores", time.time()).passed
        materialized(instance, "anomaly_scores", due.isoformat())
        result = completed_day_freshness(instance, "anomaly_scores", time.time())
        assert result.passed and result.metadata["partition"].value == due.isoformat(), result.description


@pytest.mark.integration
def test_the_checks_run_in_dagster_and_evaluate_each_selected_asset():
    assets = [dg.AssetSpec(a) for a in (*CURRENT_PARTITION_SLAS, "anomaly_scores", "feature_drift_report")]
    with dg.instance_for_test() as instance:
        materialized(instance, "clean_sensor_readings", today(time.time(), "clean_sensor_readings"))
        result = dg.materialize(
            [*assets, current_partition_freshness_checks, completed_day_freshness_checks],
            selection=dg.AssetSelection.checks(current_partition_freshness_checks, completed_day_freshness_checks),
            instance=instance,
            raise_on_error=False,
        )
        verdicts = {e.asset_key.to_user_string(): e.passed for e in result.get_asset_check_evaluations()}
        assert verdicts == {
            "clean_sensor_readings": True,
            "device_features_15m": False,
            "device_features_1h": False,
            "device_features_1d": False,
            "anomaly_scores": False,
            "feature_drift_report": False,
        }


@pytest.mark.unit
def test_data_time_is_the_newest_recorded_over_today_and_yesterday_for_the_current_version():
    from fs_checks.data_freshness_checks import DATA_CLOCKS, recorded_latest

    instance = dg.DagsterInstance.ephemeral()
    clock = DATA_CLOCKS["device_features_15m"]
    days = ["2026-01-04", "2026-01-05"]

    def written(day: str, latest: str, version: str = "v1") -> None:
        metadata = {"latest_window_end": latest, "feature_set_version": version}
        instance.report_runless_asset_event(dg.AssetMaterialization("device_features_15m", partition=day, metadata=metadata))

    assert recorded_latest(instance, dg.AssetKey("device_features_15m"), clock, days, "v1") is None
    written("2026-01-05", "2026-01-05T09:00:00")
    written("2026-01-04", "2026-01-05T00:00:00")  # a late file for yesterday, written after today's run
    written("2026-01-05", "2026-01-05T09:15:00", version="v2")  # another feature set version's table
    written("2026-01-03", "2026-01-05T12:00:00")  # not one of the two days
    # Today's latest materialization wrote v2's table: v1's newest is yesterday's.
    assert recorded_latest(instance, dg.AssetKey("device_features_15m"), clock, days, "v1") == datetime(2026, 1, 5, 0, 0)
    written("2026-01-05", "2026-01-05T09:30:00")
    assert recorded_latest(instance, dg.AssetKey("device_features_15m"), clock, days, "v1") == datetime(2026, 1, 5, 9, 30)
    written("2026-01-05", "none")  # a run that found no closed window: yesterday's still counts
    assert recorded_latest(instance, dg.AssetKey("device_features_15m"), clock, days, "v1") == datetime(2026, 1, 5, 0, 0)
    written("2026-01-04", "2026-01-04T23:45:00", version="v2")
    assert recorded_latest(instance, dg.AssetKey("device_features_15m"), clock, days, "v1") is None


@pytest.mark.unit
def test_data_time_freshness_judges_the_data_against_each_sla():
    from fs_checks.data_freshness_checks import DATA_CLOCKS, judge

    now = datetime(2026, 1, 5, 12, 50, tzinfo=timezone.utc).timestamp()
    clean = DATA_CLOCKS["clean_sensor_readings"]
    assert judge("clean_sensor_readings", clean, datetime(2026, 1, 5, 12, 40), now).passed
    late = judge("clean_sensor_readings", clean, datetime(2026, 1, 5, 12, 30), now)
    assert not late.passed and late.severity == dg.AssetCheckSeverity.ERROR and late.metadata["lag_minutes"].value == 20
    fifteen = DATA_CLOCKS["device_features_15m"]
    # Written up to 12:00: the 12:00-12:15 window closed 35 min ago (past the 30-min target, within the 45-min alert).
    warn = judge("device_features_15m", fifteen, datetime(2026, 1, 5, 12, 0), now)
    assert not warn.passed and warn.severity == dg.AssetCheckSeverity.WARN
    assert judge("device_features_15m", fifteen, datetime(2026, 1, 5, 12, 30), now).passed
    # The 1-day window of a day in progress is not late: yesterday's, written, is the newest that can be.
    assert judge("device_features_1d", DATA_CLOCKS["device_features_1d"], datetime(2026, 1, 5, 0, 0), now).passed
    assert not judge("device_objects", DATA_CLOCKS["device_objects"], None, now).passed
