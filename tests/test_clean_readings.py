"""clean_sensor_readings on real Spark and Delta: accounting, idempotency, duplicates, late data."""

import os
from datetime import datetime, timedelta

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fs_assets.ingest.assets import clean_sensor_readings
from fs_checks.data_freshness_checks import evaluate
from fs_domain.contract import Reason
from fs_domain.verdicts import Verdict
from fs_resources import settings
from fs_resources.simulator.fleet import FleetSpec, generate, write_expected_gaps
from tests.conftest import SIM_START
from tests.ingest_runs import checks, clean_rows, materialize_clean, materialize_registry, metadata, quarantine_rows
from tests.landing_files import readings, registry, write_readings

pytestmark = pytest.mark.integration

DAY = SIM_START.isoformat()


def _landing_frame(root, day: str) -> pd.DataFrame:
    folder = f"{settings.landing_root(str(root))}/date={day}"
    return pd.concat([pq.read_table(os.path.join(folder, f)).to_pandas() for f in sorted(os.listdir(folder))], ignore_index=True)


def _sorted_rows(df, drop=()):
    columns = [c for c in df.columns if c not in drop]
    return sorted(tuple(str(v) for v in row) for row in df.select(*columns).collect())


@pytest.fixture
def simulated_day(data_root):
    # Two days so the first day also receives a late file (outage backlog delivered on day two).
    spec = FleetSpec(
        devices=25,
        start=SIM_START,
        days=2,
        seed=11,
        outage_probability=0.5,
        late_outage_share=1.0,
        duplicate_rate=0.01,
        conflict_rate=0.002,
        foreign_rows_per_day=6,
    )
    generate(spec, str(data_root))
    return spec


def test_simulated_day_balances_its_books_against_an_independent_count(spark, resources, instance, data_root, simulated_day):
    materialize_registry(resources, instance)
    result = materialize_clean(resources, instance, DAY)
    assert result.success
    assert checks(result)["check_accounting_identity"].passed
    assert checks(result)["check_clean_key_unique"].passed
    assert checks(result)["check_physical_ranges"].passed

    raw = _landing_frame(data_root, DAY)
    registered = set(pd.read_csv(settings.registry_csv_path(str(data_root)))["device_id"])
    keepable = raw[raw["device_id"].isin(registered)]
    expected_duplicates = len(keepable) - len(keepable.drop_duplicates(["device_id", "ts"]))
    expected_quarantine = len(raw) - len(keepable)
    md = metadata(result)
    n_clean, n_quarantine = clean_rows(spark, DAY).count(), quarantine_rows(spark, DAY).count()
    assert md["raw_rows"] == len(raw)
    assert md["duplicates_dropped"] == expected_duplicates > 0
    assert n_quarantine == expected_quarantine == md["quarantined_rows"] > 0
    assert n_clean == keepable.drop_duplicates(["device_id", "ts"]).shape[0] == md["clean_rows_added"]
    assert len(raw) == n_clean + n_quarantine + md["duplicates_dropped"]
    assert md["conflicting_duplicates"] > 0
    assert set(md["quarantined_by_reason"]) == {Reason.UNKNOWN_DEVICE, Reason.MALFORMED_DEVICE_ID}
    # out-of-range 9999 and non-finite values became NULL with a flag; the rows stayed
    assert sum(md["flagged_values_by_sensor"].values()) > 0
    flagged = clean_rows(spark, DAY).where("size(quality_flags) > 0").count()
    assert flagged > 0
    # Where the run's time went, step by step, within the run's own seconds.
    steps = md["step_seconds"]
    assert list(steps) == ["plan", "stage", "read", "write_rows", "write_ledger", "rejudge", "day_books"], steps
    assert all(t >= 0 for t in steps.values()) and sum(steps.values()) <= md["seconds"]


def test_rerunning_a_partition_leaves_identical_table_contents(spark, resources, instance, simulated_day):
    materialize_registry(resources, instance)
    materialize_clean(resources, instance, DAY)
    first_clean = _sorted_rows(clean_rows(spark, DAY))
    first_quarantine = _sorted_rows(quarantine_rows(spark, DAY), drop=("quarantined_at",))
    materialize_clean(resources, instance, DAY)
    assert _sorted_rows(clean_rows(spark, DAY)) == first_clean
    assert _sorted_rows(quarantine_rows(spark, DAY), drop=("quarantined_at",)) == first_quarantine


def test_conflicting_duplicates_latest_ingested_wins_and_are_counted(spark, resources, instance, data_root):
    registry(data_root, ["dev-a"])
    older = write_readings(data_root, SIM_START, "older.parquet", readings("dev-a", SIM_START, range(3), temp_condenser=40.0))
    newer = write_readings(data_root, SIM_START, "a-newer.parquet", readings("dev-a", SIM_START, range(1, 2), temp_condenser=41.0))
    exact = write_readings(data_root, SIM_START, "b-exact.parquet", readings("dev-a", SIM_START, range(2, 3), temp_condenser=40.0))
    os.utime(older, (1_000, 1_000))
    os.utime(exact, (2_000, 2_000))
    os.utime(newer, (3_000, 3_000))
    materialize_registry(resources, instance)
    result = materialize_clean(resources, instance, DAY)
    md = metadata(result)
    assert (md["raw_rows"], md["clean_rows_added"], md["duplicates_dropped"], md["conflicting_duplicates"]) == (5, 3, 2, 1)
    rows = {r["ts"].minute: r for r in clean_rows(spark, DAY).collect()}
    assert rows[1]["temp_condenser"] == 41.0 and rows[1]["source_file"] == str(newer)
    assert rows[2]["temp_condenser"] == 40.0


def test_late_file_for_a_past_day_reopens_that_partition(spark, resources, instance, data_root):
    registry(data_root, ["dev-a"])
    write_readings(data_root, SIM_START, "part.parquet", readings("dev-a", SIM_START, range(0, 10)))
    materialize_registry(resources, instance)
    materialize_clean(resources, instance, DAY)
    assert clean_rows(spark, DAY).count() == 10
    write_readings(data_root, SIM_START, "late.parquet", readings("dev-a", SIM_START, range(10, 15)))
    result = materialize_clean(resources, instance, DAY)
    assert clean_rows(spark, DAY).count() == 15
    assert checks(result)["check_accounting_identity"].passed


def test_missing_registry_fails_with_a_clear_message(spark, resources, instance, data_root):
    write_readings(data_root, SIM_START, "part.parquet", readings("dev-a", SIM_START, range(3)))
    result = materialize_clean(resources, instance, DAY, raise_on_error=False)
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    message = str(failure.event_specific_data.error.message) + str(failure.event_specific_data.user_failure_data)
    assert "device_registry" in message and "materialize" in message


def test_a_day_without_files_is_refused_and_empties_its_partition_only_when_told(spark, resources, instance, data_root):
    registry(data_root, ["dev-a"])
    path = write_readings(data_root, SIM_START, "part.parquet", readings("dev-a", SIM_START, range(3)))
    materialize_registry(resources, instance)
    materialize_clean(resources, instance, DAY)
    other = (SIM_START + timedelta(days=1)).isoformat()
    write_readings(data_root, SIM_START + timedelta(days=1), "part.parquet", readings("dev-a", SIM_START + timedelta(days=1), range(3)))
    materialize_clean(resources, instance, other)
    path.unlink()
    # A vanished landing folder must not overwrite its day with nothing...
    refused = materialize_clean(resources, instance, DAY, raise_on_error=False)
    assert not refused.success
    failure = [e for e in refused.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "allow_shrink" in str(failure.event_specific_data.user_failure_data) + str(failure.event_specific_data.error.message)
    assert clean_rows(spark, DAY).count() == 3
    # ...unless the operator says so.
    result = dg.materialize(
        [clean_sensor_readings], partition_key=DAY, resources=resources, instance=instance,
        run_config={"ops": {"clean_sensor_readings": {"config": {"allow_shrink": True}}}},
    )  # fmt: skip
    assert metadata(result)["raw_rows"] == 0
    assert clean_rows(spark, DAY).count() == 0
    assert clean_rows(spark, other).count() == 3


def test_a_clean_run_records_the_sites_behind_the_fleet_and_the_clock_names_the_stalest(spark, resources, instance, data_root):
    day = SIM_START.isoformat()
    sites = {"dev-a": "site-0001", "dev-b": "site-0002", "dev-c": "site-0003", "dev-d": "site-0004", "dev-e": "site-0005"}
    # dev-d is installed the day after: its site is not expected yet. dev-e never reports.
    registry(data_root, sites, sites=sites, installed={"dev-d": (SIM_START + timedelta(days=1)).isoformat()})
    frames = [
        readings("dev-a", SIM_START, range(0, 31)),  # the fleet's newest: 00:30
        readings("dev-b", SIM_START, range(0, 11)),  # silent after 00:10, undeclared: its gateway
        readings("dev-c", SIM_START, range(0, 6)),  # silent after 00:05, as declared
        readings("dev-d", SIM_START, range(0, 2)),
    ]
    write_readings(data_root, SIM_START, "all.parquet", pd.concat(frames, ignore_index=True))
    gap = pd.DataFrame([{"device_id": "dev-c", "gap_start": f"{day}T00:06:00Z", "gap_end": f"{day}T02:00:00Z", "reason": "outage"}])
    write_expected_gaps(gap, str(data_root), SIM_START)
    materialize_registry(resources, instance)
    recorded = metadata(materialize_clean(resources, instance, day, with_checks=False))
    assert recorded["lagging_sites"] == {"site-0005": "none", "site-0002": f"{day}T00:10:00"}

    # The clock reads them back from the instance: the stalest site pages, named, on the clean readings' SLA.
    now = datetime.fromisoformat(f"{day}T00:31:00+00:00")
    judged = evaluate(instance, "clean_sensor_readings", now, "v1")
    assert not judged.passed and judged.metadata["clock"].value == "readings of site-0005"
    assert Verdict.from_metadata(judged.metadata).observed == 31.0
