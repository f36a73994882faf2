"""A clean run killed mid-batch recovers with nobody stepping in.

A real `dagster-daemon` on a fresh instance with the settings of `dagster_home/dagster.yaml` (run
monitoring, run retries, pools), only the landing sensor running: it launches the day's clean run,
which is killed with SIGKILL (its worker, Spark JVM and Python workers) after its merge into the
clean table committed and before its ledger did, while another landing file lands. Run monitoring
marks it failed, frees the pool slot its step still holds, its retry and the sensor's next run
clean both files, and the day's books balance and equal a rebuild of the same files row for row.

The waits are set by the instance's settings, not by the test: a monitoring poll until the killed
run is marked failed, the settings' pause after a run's end until its slot is freed, then a cold
run. The test's instance paces run monitoring faster than `make run` (tests/daemon_home.py).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import dagster as dg
import pytest

from fs_assets.ingest.assets import CLEAN_POOL, clean_sensor_readings
from fs_checks.ingest_checks import ingest_checks
from fs_domain.tables import CLEAN_TABLE, LEDGER_TABLE, QUARANTINE_TABLE
from fs_resources.dagster_ui import DagsterUI, process_tree, run_worker_pid
from fs_resources.delta import DeltaTables
from fs_resources.spark import DeltaSparkResource
from fs_sensors.landing_zone_sensor import clean_readings_job
from tests.conftest import SIM_START, wait_until
from tests.daemon_home import daemon_home
from tests.ingest_runs import clean_rows, materialize_clean, materialize_registry, quarantine_rows
from tests.landing_files import readings, registry, write_readings

pytestmark = pytest.mark.e2e

DAY = SIM_START.isoformat()
DEVICES = [f"dev-{i:05d}" for i in range(1, 5)]
UNKNOWN = "dev-99999"  # not in the registry: its readings are quarantined, so every batch writes quarantine rows too
WAITING = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
RECOVERY_TIMEOUT = 900


def land(root: Path, name: str, minutes: range, unknown_rows: int) -> Path:
    import pandas as pd

    frames = [readings(d, SIM_START, minutes) for d in DEVICES] + [readings(UNKNOWN, SIM_START, minutes[:unknown_rows])]
    return write_readings(root, SIM_START, name, pd.concat(frames, ignore_index=True))


def commits(table: str) -> int:
    """Commits in the table's Delta log, read from disk (no Spark) so the test can poll it fast."""
    log = Path(DeltaTables(spark=DeltaSparkResource()).path(table)) / "_delta_log"
    return len(list(log.glob("*.json"))) if log.exists() else 0


def day_rows(spark) -> tuple[list[tuple], list[tuple]]:
    """The day's clean and quarantine rows, without when a row was quarantined (a rebuild does it again)."""

    def rows(df, drop=()):
        return sorted(tuple(str(v) for v in r) for r in df.select(*[c for c in df.columns if c not in drop]).collect())

    return rows(clean_rows(spark, DAY)), rows(quarantine_rows(spark, DAY), drop=("quarantined_at",))


def clean_runs(instance: dg.DagsterInstance, statuses=None) -> list[dg.RunRecord]:
    filters = dg.RunsFilter(job_name=clean_readings_job.name, tags={"dagster/partition": DAY}, statuses=statuses or [])
    return list(instance.get_run_records(filters=filters))


def accounting_passed(instance: dg.DagsterInstance, run_id: str) -> bool | None:
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, limit=100).records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if evaluation.check_name == "check_accounting_identity":
            return evaluation.passed
    return None


# Three cold runs (the killed one, its retry, the sensor's next) on a machine that may be shared.
@pytest.mark.timeout(1800)
def test_a_clean_run_killed_mid_batch_is_recovered_by_the_daemon_and_the_day_equals_its_rebuild(spark, tmp_path, monkeypatch):
    root, home = tmp_path / "data", daemon_home(tmp_path / "dagster_home")
    root.mkdir()
    monkeypatch.setenv("FS_DATA_ROOT", str(root))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    resources = {"spark": DeltaSparkResource(), "delta": DeltaTables(spark=DeltaSparkResource())}
    registry(root, DEVICES)
    land(root, "0000-0119.parquet", range(0, 120), unknown_rows=3)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        # The day's first file, cleaned before the daemon starts (here, in this process): the run under
        # test is an incremental batch merged into a day that already holds rows.
        materialize_registry(resources, instance)
        assert materialize_clean(resources, instance, DAY, with_checks=False).success
        before = {table: commits(table) for table in (CLEAN_TABLE, QUARANTINE_TABLE, LEDGER_TABLE)}
        land(root, "0100-0219.parquet", range(100, 220), unknown_rows=2)

        env = {"FS_DATA_ROOT": str(root), "FS_SPARK_MASTER": "local[1]"}
        with DagsterUI(home, env=env, log_dir=tmp_path / "logs") as ui:
            # Only the landing sensor: features, checks and projections would only add runs to wait for.
            ui.pause_automation(keep=("landing_zone_sensor",))
            ui.start_daemon()

            def started() -> tuple[dg.RunRecord, int] | None:
                assert not ui.daemon_exited(), ui.log_tail("daemon")
                for record in clean_runs(instance, [dg.DagsterRunStatus.STARTED]):
                    if pid := run_worker_pid(instance, record.dagster_run.run_id):
                        return record, pid
                return None

            record, pid = wait_until(started, 600, "the landing sensor's clean run to start", interval=0.5)
            killed = record.dagster_run.run_id

            def merged() -> bool:
                run = instance.get_run_by_id(killed)
                assert not run.is_finished, f"the run ended ({run.status}) before its merge committed: {ui.log_tail('daemon')}"
                return commits(CLEAN_TABLE) > before[CLEAN_TABLE]

            wait_until(merged, 600, "the run's merge into clean readings to commit", interval=0.02)
            land(root, "0300-0359.parquet", range(300, 360), unknown_rows=1)  # lands while the run dies
            for p in process_tree(pid):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            killed_at = time.time()
            # Cut short between its writes: the quarantine and clean commits are in, the ledger's is not.
            assert commits(QUARANTINE_TABLE) > before[QUARANTINE_TABLE] and commits(LEDGER_TABLE) == before[LEDGER_TABLE]

            def failed() -> bool:
                return instance.get_run_by_id(killed).status == dg.DagsterRunStatus.FAILURE

            wait_until(failed, 300, "run monitoring to mark the killed run failed", interval=0.5)
            # What the instance must undo: the dead run still holds its step's slot of the table's pool.
            assert killed in instance.event_log_storage.get_concurrency_info(CLEAN_POOL).active_run_ids

            def recovered() -> list[dg.RunRecord] | None:
                assert not ui.daemon_exited(), ui.log_tail("daemon")
                if clean_runs(instance, WAITING):
                    return None
                done = [
                    r
                    for r in clean_runs(instance, [dg.DagsterRunStatus.SUCCESS])
                    if r.create_timestamp.timestamp() > killed_at - 60 and r.dagster_run.run_id != killed
                ]
                if not done:
                    return None
                cleaned = DeltaTables(spark=DeltaSparkResource()).read(LEDGER_TABLE).where(f"landing_date = DATE'{DAY}'")
                return done if cleaned.select("source_file").distinct().count() == 3 else None

            try:
                done = wait_until(recovered, RECOVERY_TIMEOUT, "the next runs to clean both files", interval=1)
            finally:
                runs = [(r.dagster_run.run_id[:8], r.dagster_run.status.value, r.dagster_run.tags.get("dagster/parent_run_id", "")[:8])
                        for r in clean_runs(instance)]  # fmt: skip
                print(f"clean runs of {DAY}: {runs}; recovered {time.time() - killed_at:.0f} s after the kill")
            pool = instance.event_log_storage.get_concurrency_info(CLEAN_POOL)
            slot_holders = instance.event_log_storage.get_concurrency_run_ids()

        # Nobody stepped in: the killed run's retry ran (Dagster's, a child of it) and nothing waits.
        children = [r for r in clean_runs(instance) if r.dagster_run.tags.get("dagster/parent_run_id") == killed]
        assert children, "the killed run was not retried"
        assert not clean_runs(instance, [dg.DagsterRunStatus.QUEUED])
        assert pool.active_slot_count == 0 and not pool.pending_run_ids, pool
        assert killed not in slot_holders
        assert all(accounting_passed(instance, r.dagster_run.run_id) for r in done), [r.dagster_run.run_id for r in done]

        # Every file once in the ledger, every quarantined row once, and the day as a rebuild of the same files makes it.
        ledger = DeltaTables(spark=DeltaSparkResource()).read(LEDGER_TABLE).where(f"landing_date = DATE'{DAY}'")
        assert ledger.count() == ledger.select("source_file").distinct().count() == 3
        clean, quarantined = day_rows(spark)
        assert len(clean) == len(DEVICES) * 280 and len(quarantined) == 6
        rebuilt = dg.materialize(
            [clean_sensor_readings, *ingest_checks], partition_key=DAY, resources=resources, instance=instance,
            run_config={"ops": {"clean_sensor_readings": {"config": {"rebuild": True}}}},
        )  # fmt: skip
        assert rebuilt.success and accounting_passed(instance, rebuilt.run_id)
        assert day_rows(spark) == (clean, quarantined)
