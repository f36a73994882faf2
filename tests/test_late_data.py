"""A late file for a past day flows through on its own: the landing sensor re-cleans the day, the
automation recomputes its three feature partitions and then its scores and drift report; a
training set built as of before the late file is unchanged."""

from __future__ import annotations

import os
from datetime import timedelta

import dagster as dg
import pandas as pd
import pytest

from definitions import defs
from fs_assets.features.assets import feature_assets
from fs_assets.ingest.assets import clean_sensor_readings
from fs_assets.monitoring.assets import monitoring_assets
from fs_checks.ingest_checks import ingest_checks
from fs_resources.delta import DeltaTables
from fs_resources.offline import OfflineStore
from fs_resources.simulator.fleet import FleetSpec
from fs_resources.spark import DeltaSparkResource
from fs_sensors.landing_zone_sensor import landing_zone_sensor
from tests.conftest import SIM_START
from tests.feature_tables import an_instant_after_the_last_commit, commit_times
from tests.ingest_runs import ingest_with_features, pipeline_resources, train_and_monitor
from tests.landing_files import readings, write_readings

pytestmark = pytest.mark.integration

DAYS = [(SIM_START + timedelta(days=i)).isoformat() for i in range(3)]
LATE_DAY = DAYS[1]
AUTOMATED = dg.AssetSelection.groups("features", "monitoring")


WATCHED = ("device_features_15m", "device_features_1h", "device_features_1d", "anomaly_scores", "feature_drift_report")


def requested(result) -> set[tuple[str, str]]:
    return {(name, p) for name in WATCHED for p in result.get_requested_partitions(dg.AssetKey(name))}


def feature_rows(spark, day: str) -> list[tuple]:
    table = DeltaTables(spark=DeltaSparkResource()).read("device_features/v1").where(f"window_date = DATE'{day}'").drop("computed_at")
    return sorted(tuple(map(str, r)) for r in table.collect())


def test_a_late_file_recomputes_its_day_and_what_follows_and_leaves_an_earlier_training_set_alone(spark, data_root, redis_server, instance):
    resources = pipeline_resources(redis_server)
    ingest_with_features(resources, instance, data_root, FleetSpec.clean(devices=6, start=SIM_START, days=3, seed=13), DAYS[0], DAYS[-1])
    train_and_monitor(resources, instance, DAYS[0], DAYS[-1])

    # The landing sensor has seen every day; the automation has nothing to do.
    _, cursor = _landing_tick(instance, None)
    evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=AUTOMATED)
    assert requested(evaluation) == set()

    # 11:00 joins the 10:00-11:00 window, the hour the late file re-sends.
    entities = pd.DataFrame(
        {
            "device_id": ["dev-00001"] * 3,
            "event_time": pd.to_datetime([f"{LATE_DAY}T11:00:00Z", f"{LATE_DAY}T23:59:00Z", f"{DAYS[2]}T00:30:00Z"]),
        }
    )
    features_path = DeltaTables(spark=DeltaSparkResource()).path("device_features/v1")
    before_late_file = an_instant_after_the_last_commit(features_path)
    store = OfflineStore()
    earlier = store.get_historical_features(entities, ["temp_evaporator_mean", "reading_count"], 60, as_of=before_late_file)
    untouched = {d: feature_rows(spark, d) for d in DAYS}

    # A late re-send for the middle day: an hour of dev-00001 with other values (the latest file wins).
    write_readings(
        data_root,
        SIM_START + timedelta(days=1),
        "late-resend.parquet",
        readings("dev-00001", SIM_START + timedelta(days=1), range(600, 660), temp_evaporator=-5.0),
    )
    os.utime(data_root / "landing" / f"date={LATE_DAY}" / "late-resend.parquet")
    requests, cursor = _landing_tick(instance, cursor)
    assert [r.partition_key for r in requests] == [LATE_DAY]
    assert dg.materialize([clean_sensor_readings, *ingest_checks], partition_key=LATE_DAY, resources=resources, instance=instance).success

    # One tick requests the day's features and, downstream of them in the same run, its scores and drift report.
    evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=AUTOMATED, cursor=evaluation.cursor)
    assert requested(evaluation) == {(a, LATE_DAY) for a in WATCHED}
    assert dg.materialize([*feature_assets, *monitoring_assets], partition_key=LATE_DAY, resources=resources, instance=instance).success
    assert commit_times(features_path)[0] > before_late_file  # the recomputation is after the training set's as_of
    evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=AUTOMATED, cursor=evaluation.cursor)
    assert requested(evaluation) == set()

    assert feature_rows(spark, LATE_DAY) != untouched[LATE_DAY]
    assert feature_rows(spark, DAYS[0]) == untouched[DAYS[0]] and feature_rows(spark, DAYS[2]) == untouched[DAYS[2]]
    now = store.get_historical_features(entities, ["temp_evaporator_mean", "reading_count"], 60)
    assert now["temp_evaporator_mean"].iloc[0] != earlier["temp_evaporator_mean"].iloc[0]  # the 11:00-12:00 window moved
    again = store.get_historical_features(entities, ["temp_evaporator_mean", "reading_count"], 60, as_of=before_late_file)
    pd.testing.assert_frame_equal(again, earlier)


def _landing_tick(instance, cursor):
    result = landing_zone_sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
    return result.run_requests, result.cursor
