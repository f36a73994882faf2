"""landing_zone_sensor requests exactly the days whose files are new or changed, once per file set."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from fs_sensors.landing_zone_sensor import INGEST_PRIORITY_TAGS, REGISTRY_CURSOR_KEY, _priority, landing_zone_sensor
from tests.conftest import SIM_START
from tests.landing_files import readings, registry, write_readings

DAY1, DAY2 = SIM_START, SIM_START + timedelta(days=1)


def _tick(instance, cursor):
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    result = landing_zone_sensor(context)
    return result.run_requests, result.cursor


def _record_registry_materialization(instance):
    instance.report_runless_asset_event(dg.AssetMaterialization("device_registry"))


@pytest.mark.unit
def test_new_changed_and_late_files_trigger_exactly_their_partitions(instance, data_root):
    registry(data_root, ["dev-a"])
    write_readings(data_root, DAY1, "a.parquet", readings("dev-a", DAY1, range(3)))
    write_readings(data_root, DAY2, "a.parquet", readings("dev-a", DAY2, range(3)))

    # first the registry alone: cleaning a day needs it
    requests, cursor = _tick(instance, None)
    assert [(r.job_name, r.partition_key) for r in requests] == [("device_registry_job", None)]
    assert REGISTRY_CURSOR_KEY in json.loads(cursor)
    requests, cursor = _tick(instance, cursor)
    assert requests == []

    _record_registry_materialization(instance)
    requests, cursor = _tick(instance, cursor)
    # Newest first: a store catching up is current after one run.
    assert [r.partition_key for r in requests] == sorted([DAY1.isoformat(), DAY2.isoformat()], reverse=True)
    # And past days leave the queue after the current day's runs (the job's priority 1), also after its next ones.
    assert [r.tags["dagster/priority"] for r in requests] == ["0", "0"]
    assert _priority(datetime.now(UTC).date().isoformat()) == INGEST_PRIORITY_TAGS

    # nothing changed: nothing requested
    requests, cursor = _tick(instance, cursor)
    assert requests == []

    # a late file for the past day re-opens only that day, under a new run key
    first_key = json.loads(cursor)[DAY1.isoformat()]
    write_readings(data_root, DAY1, "late.parquet", readings("dev-a", DAY1, range(10, 12)))
    requests, cursor = _tick(instance, cursor)
    assert [r.partition_key for r in requests] == [DAY1.isoformat()]
    assert requests[0].run_key == f"{DAY1.isoformat()}:{json.loads(cursor)[DAY1.isoformat()]}"
    assert json.loads(cursor)[DAY1.isoformat()] != first_key


@pytest.mark.unit
def test_a_new_file_of_a_day_whose_run_waits_in_the_queue_requests_no_second_run(instance, data_root):
    registry(data_root, ["dev-a"])
    _record_registry_materialization(instance)
    write_readings(data_root, DAY1, "a.parquet", readings("dev-a", DAY1, range(3)))
    requests, cursor = _tick(instance, None)
    assert [r.partition_key for r in requests if r.partition_key] == [DAY1.isoformat()]
    queued = dg.DagsterRun(
        job_name="clean_readings_job",
        run_id="queued-run",
        status=dg.DagsterRunStatus.NOT_STARTED,
        tags={"dagster/partition": DAY1.isoformat()},
    )
    instance.add_run(queued)
    # The queued run lists the files when it starts: it takes this one too.
    write_readings(data_root, DAY1, "b.parquet", readings("dev-a", DAY1, range(3, 6)))
    requests, cursor = _tick(instance, cursor)
    assert requests == []
    # Once it has started (and listed its files), a new file is a new run.
    instance.delete_run("queued-run")
    instance.add_run(queued.with_status(dg.DagsterRunStatus.STARTED))
    write_readings(data_root, DAY1, "c.parquet", readings("dev-a", DAY1, range(6, 9)))
    requests, cursor = _tick(instance, cursor)
    assert [r.partition_key for r in requests] == [DAY1.isoformat()]


@pytest.mark.unit
def test_folders_outside_the_partitions_are_skipped(instance, data_root):
    _record_registry_materialization(instance)
    write_readings(data_root, "1999-12-31", "a.parquet", readings("dev-a", SIM_START, range(1)))
    requests, _ = _tick(instance, None)
    assert requests == []


@pytest.mark.integration
def test_observing_the_landing_zone_reports_a_data_version_that_moves_with_the_files(instance, data_root):
    from fs_assets.ingest.assets import raw_sensor_readings

    write_readings(data_root, DAY1, "a.parquet", readings("dev-a", DAY1, range(3)))

    def observe():
        from dagster._core.definitions.observe import observe as dagster_observe

        result = dagster_observe([raw_sensor_readings], instance=instance)
        (event,) = result.get_asset_observation_events()
        return event.asset_observation_data.asset_observation

    first = observe()
    assert first.metadata["files"].value == 1 and first.metadata["partitions"].value == 1
    assert observe().data_version == first.data_version
    write_readings(data_root, DAY2, "a.parquet", readings("dev-a", DAY2, range(3)))
    assert observe().data_version != first.data_version


@pytest.mark.unit
def test_days_whose_quarantined_verdicts_can_change_get_a_clean_run_once(instance, data_root):
    registry(data_root, ["dev-a"])
    write_readings(data_root, DAY1, "a.parquet", readings("dev-a", DAY1, range(3)))
    _record_registry_materialization(instance)
    requests, cursor = _tick(instance, None)
    assert [r.partition_key for r in requests if r.partition_key] == [DAY1.isoformat()]

    # The registry learned a device whose readings of DAY2 wait in the quarantine: DAY2's clean run re-admits them.
    instance.report_runless_asset_event(dg.AssetMaterialization("device_registry", metadata={"days_to_rejudge": [DAY2.isoformat()]}))
    requests, cursor = _tick(instance, cursor)
    assert [(r.partition_key, r.job_name) for r in requests] == [(DAY2.isoformat(), "clean_readings_job")]
    assert ":rejudge:registry:" in requests[0].run_key
    requests, cursor = _tick(instance, cursor)
    assert requests == []

    # Today's clean run left readings stamped ahead: today gets a run once they come due, not before.
    today = datetime.now(UTC).date().isoformat()
    due = datetime.now(UTC) + timedelta(minutes=5)
    instance.report_runless_asset_event(
        dg.AssetMaterialization("clean_sensor_readings", partition=today, metadata={"rejudge_due_at": due.isoformat()})
    )
    requests, cursor = _tick(instance, cursor)
    assert requests == []
    due = datetime.now(UTC) - timedelta(seconds=1)
    instance.report_runless_asset_event(
        dg.AssetMaterialization("clean_sensor_readings", partition=today, metadata={"rejudge_due_at": due.isoformat()})
    )
    requests, cursor = _tick(instance, cursor)
    assert [r.partition_key for r in requests] == [today] and ":rejudge:due:" in requests[0].run_key
    requests, cursor = _tick(instance, cursor)
    assert requests == []
