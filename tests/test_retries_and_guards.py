"""Retries and guards: a failed day is requested again, a shrinking replace is refused, a refused
commit is repeated only on unchanged inputs, and every write names its run."""

import shutil
from datetime import timedelta

import dagster as dg
import pytest

from fs_domain.tables import CLEAN_TABLE, QUARANTINE_TABLE, REGISTRY_TABLE
from fs_resources.delta import DeltaInputsChanged, DeltaTables, _conflicts
from fs_resources.spark import DeltaSparkResource
from fs_sensors import landing_zone_sensor as landing_sensor
from tests.conftest import SIM_START
from tests.ingest_runs import materialize_clean, materialize_registry
from tests.landing_files import readings, registry, write_readings

pytestmark = pytest.mark.integration

DAY = SIM_START.isoformat()


def _failure_text(result) -> str:
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    return str(failure.event_specific_data.user_failure_data) + str(failure.event_specific_data.error.message)


def test_a_truncated_registry_is_refused_and_accepted_only_when_told(spark, resources, instance, data_root):
    registry(data_root, [f"dev-{i:03d}" for i in range(10)])
    materialize_registry(resources, instance)
    # The file as a writer caught half-way leaves it: its header and the first two devices.
    path = registry(data_root, [])
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:3]))
    from fs_assets.ingest.assets import device_registry

    refused = dg.materialize([device_registry], resources=resources, instance=instance, raise_on_error=False)
    assert not refused.success and "allow_shrink" in _failure_text(refused)
    delta = DeltaTables(spark=DeltaSparkResource())
    assert delta.read(REGISTRY_TABLE).count() == 10
    told = dg.materialize(
        [device_registry],
        resources=resources,
        instance=instance,
        run_config={"ops": {"device_registry": {"config": {"allow_shrink": True}}}},
    )
    assert told.success and delta.read(REGISTRY_TABLE).count() == 2


def test_clean_and_quarantine_writes_carry_their_run_id(spark, resources, instance, data_root):
    registry(data_root, ["dev-a"])
    write_readings(data_root, SIM_START, "part.parquet", readings("dev-a", SIM_START, range(3)))
    write_readings(data_root, SIM_START, "unknown.parquet", readings("dev-zz", SIM_START, range(2)))
    materialize_registry(resources, instance)
    result = materialize_clean(resources, instance, DAY)
    delta = DeltaTables(spark=DeltaSparkResource())
    assert delta.writer_run_ids(CLEAN_TABLE)[0] == delta.writer_run_ids(QUARANTINE_TABLE)[0] == result.run_id


def _conflict():
    """A real Delta concurrent-modification exception, as a refused commit raises it."""
    from delta.exceptions import ConcurrentAppendException

    assert ConcurrentAppendException in _conflicts()
    return ConcurrentAppendException("Files were added to the partition by a concurrent update")


def test_a_refused_commit_is_repeated_only_while_its_inputs_are_unchanged(spark, data_root):
    delta = DeltaTables(spark=DeltaSparkResource(), retry_backoff_seconds=0)
    frame = spark.createDataFrame([(1,)], "x int")
    delta.overwrite(frame, "source")
    _, read_version = delta.read_pinned("source")

    def refused_once(attempts: list):
        def save(token: str) -> None:
            attempts.append(token)
            if len(attempts) == 1:
                raise _conflict()
            frame.write.format("delta").mode("overwrite").option("userMetadata", token).save(delta.path("target"))

        return save

    attempts: list = []
    write = delta._commit("target", refused_once(attempts), (), "run-1", {"source": read_version})
    assert len(attempts) == 2 and write.run_id == "run-1"

    delta.overwrite(frame, "source")  # another run changed the input meanwhile
    attempts = []
    with pytest.raises(DeltaInputsChanged, match=r"source v\d+ -> v\d+"):
        delta._commit("target", refused_once(attempts), (), "run-2", {"source": read_version})
    assert len(attempts) == 1


def test_a_day_whose_last_run_failed_is_requested_again_after_a_pause(spark, resources, instance, data_root, monkeypatch):
    from definitions import defs

    registry(data_root, ["dev-a"])
    write_readings(data_root, SIM_START, "part.parquet", readings("dev-a", SIM_START, range(3)))
    materialize_registry(resources, instance)
    context = dg.build_sensor_context(instance=instance)
    first = landing_sensor.landing_zone_sensor(context)
    assert [r.partition_key for r in first.run_requests] == [None, DAY]  # the registry, then the day
    # The day's run fails (its registry table is gone), and its retries are spent.
    shutil.rmtree(DeltaTables(spark=DeltaSparkResource()).path(REGISTRY_TABLE))
    job = defs.resolve_job_def("clean_readings_job")
    failed = job.execute_in_process(partition_key=DAY, instance=instance, resources=resources, raise_on_error=False)
    assert not failed.success
    quiet = landing_sensor.landing_zone_sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor))
    assert quiet.run_requests == []  # within the pause: nothing yet
    monkeypatch.setattr(landing_sensor, "REREQUEST_PAUSE", timedelta(0))
    again = landing_sensor.landing_zone_sensor(dg.build_sensor_context(instance=instance, cursor=quiet.cursor))
    (request,) = again.run_requests
    assert request.partition_key == DAY and request.run_key.endswith(":rerun1") and request.tags["fs/rerun_of"] == failed.run_id
    # Its file set unchanged and its run still failed: the next request is the second, not a repeat of the first.
    later = landing_sensor.landing_zone_sensor(dg.build_sensor_context(instance=instance, cursor=again.cursor))
    assert [r.run_key for r in later.run_requests] == [request.run_key.replace("rerun1", "rerun2")]


def test_a_batch_finds_its_own_commit_and_none_in_a_table_created_anew_at_its_path(spark, data_root):
    """A batch cut short finds the steps it committed (`batch_commit`), and each run its commits
    (`run_commits`), from commit records read once per process: a table deleted and created again at
    the same path restarts its versions, and must not answer with the old table's commits."""
    delta = DeltaTables(spark=DeltaSparkResource())
    rows = spark.createDataFrame([("a", 1)], "day STRING, x INT")
    first = delta.replace_partitions(rows, "batches", {"day": ["a"]}, run_id="run-1", batch="b1-step")
    delta.replace_partitions(rows, "batches", {"day": ["a"]}, run_id="run-2", batch="b2-step")
    assert delta.batch_commit("batches", "b1-step").version == first.version
    assert delta.batch_commit("batches", "b1") is None  # a batch is named whole, not by its prefix
    assert delta.run_commits("batches", "run-2") == [(1, "WRITE")]

    shutil.rmtree(delta.path("batches"))
    again = delta.replace_partitions(rows, "batches", {"day": ["a"]}, run_id="run-3", batch="b3-step")
    assert again.version == first.version == 0
    assert delta.batch_commit("batches", "b1-step") is None
    assert delta.batch_commit("batches", "b3-step").version == 0
    assert delta.run_commits("batches", "run-1") == [] and delta.run_commits("batches", "run-3") == [(0, "WRITE")]
    assert delta.writer_run_ids("batches") == ["run-3"]
