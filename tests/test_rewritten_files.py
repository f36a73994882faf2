"""A cleaned landing file rewritten, appended or gone costs the keys it touches, and the day equals its rebuild."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from fs_assets.ingest.assets import clean_sensor_readings
from fs_assets.ingest.ledger import CLEANED, VANISHED, Entry, plan
from fs_checks.ingest_checks import ingest_checks
from fs_checks.landing_checks import CHECK_LANDING_FILES_VANISHED, landing_checks
from fs_domain.tables import CLEAN_TABLE, LEDGER_TABLE
from fs_resources.filesystem import FileStatus
from tests.conftest import SIM_START
from tests.ingest_runs import checks, clean_rows, materialize_registry, metadata, quarantine_rows, table
from tests.landing_files import day_folder, readings, registry, write_readings

DAY = SIM_START.isoformat()
# Landing times, one a minute apart: "latest ingested wins" must be decided by them, not by arrival.
T0 = 1_767_000_000


def _clean(resources, instance, **config) -> dg.ExecuteInMemoryResult:
    return dg.materialize(
        [clean_sensor_readings, *ingest_checks, *landing_checks], partition_key=DAY, resources=resources, instance=instance,
        run_config={"ops": {"clean_sensor_readings": {"config": config}}},
    )  # fmt: skip


def _landed(path: Path, minute: int) -> Path:
    os.utime(path, ns=((T0 + 60 * minute) * 10**9,) * 2)
    return path


def _day(spark) -> tuple[list, list, tuple]:
    """The day's clean rows, quarantine rows (less the time they were written) and ledger sums."""
    clean = sorted(tuple(str(v) for v in r) for r in clean_rows(spark, DAY).collect())
    q = quarantine_rows(spark, DAY)
    quarantine = sorted(tuple(str(v) for v in r) for r in q.select(*[c for c in q.columns if c != "quarantined_at"]).collect())
    sums = (
        table(spark, LEDGER_TABLE)
        .where(F.col("landing_date") == DAY)
        .agg(*[F.sum(c) for c in ("raw_rows", "quarantined_rows", "clean_rows_added", "duplicates_dropped")])
        .first()
    )
    return clean, quarantine, tuple(sums)


def _equals_its_rebuild(spark, resources, instance, incremental: dg.ExecuteInMemoryResult) -> None:
    assert checks(incremental)["check_accounting_identity"].passed, metadata(incremental)["accounting"]
    assert checks(incremental)["check_clean_key_unique"].passed
    day = _day(spark)
    rebuilt = _clean(resources, instance, rebuild=True, allow_shrink=True)
    assert checks(rebuilt)["check_accounting_identity"].passed
    again = _day(spark)
    assert day[0] == again[0], "clean rows differ from the rebuild"
    assert day[1] == again[1], "quarantine rows differ from the rebuild"
    assert day[2] == again[2], "the ledger's sums differ from the rebuild's"


def _names(paths) -> set[str]:
    return {Path(p).name for p in paths}


@pytest.mark.integration
def test_a_rewritten_appended_or_vanished_file_costs_its_keys_and_the_day_equals_its_rebuild(spark, resources, instance, data_root):
    registry(data_root, ["dev-a", "dev-b", "dev-z"])
    folder = day_folder(data_root, SIM_START)
    # a.parquet wins dev-a's minutes 10-19 over b.parquet (landed later); b's losers are not stored.
    _landed(write_readings(data_root, SIM_START, "a.parquet", readings("dev-a", SIM_START, range(0, 20), temp_evaporator=-21.0)), 2)
    _landed(write_readings(data_root, SIM_START, "b.parquet", readings("dev-a", SIM_START, range(10, 30), temp_evaporator=-22.0)), 1)
    _landed(write_readings(data_root, SIM_START, "c.parquet", readings("dev-z", SIM_START, range(0, 10))), 1)
    (folder / "d.csv").write_text("device_id,ts,temp_evaporator\ndev-b,2026-01-05T01:00:00Z,-20\n")
    _landed(folder / "d.csv", 1)
    materialize_registry(resources, instance)
    assert checks(_clean(resources, instance))["check_accounting_identity"].passed

    # Rewritten whole: dev-a's minutes 0-4 only (5-9 now held by no file, 10-19 by b again), a
    # stranger's rows and a reading of dev-b.
    rewritten = pd.concat(
        [readings("dev-a", SIM_START, range(0, 5), temp_evaporator=-23.0), readings("dev-x", SIM_START, range(0, 2)),
         readings("dev-b", SIM_START, range(60, 61), temp_evaporator=-24.0)]
    )  # fmt: skip
    _landed(write_readings(data_root, SIM_START, "a.parquet", rewritten), 3)
    run = _clean(resources, instance)
    md = metadata(run)
    assert "judged again" in md["mode"][DAY] and "rebuild" not in md["mode"][DAY]
    assert _names(md["rewritten_files"]) == {"a.parquet"} and md["files_read"] == 1
    # b shares dev-a's range, d.csv has no statistics; c's device lies outside every touched range.
    assert _names(md["files_reread"][DAY]) == {"b.parquet", "d.csv"}
    assert md["keys_replaced"][DAY] == {"keys_touched": 21, "clean_rows_before": 21, "clean_rows_after": 16}
    held = {
        (r["ts"].minute + 60 * r["ts"].hour, r["temp_evaporator"]) for r in clean_rows(spark, DAY).where("device_id = 'dev-a'").collect()
    }
    assert held == {*((m, -23.0) for m in range(0, 5)), *((m, -22.0) for m in range(10, 30))}
    assert quarantine_rows(spark, DAY).count() == 2
    _equals_its_rebuild(spark, resources, instance, run)

    # Appended in place: the same file grown by dev-a's minutes 40-44.
    grown = pd.concat([rewritten, readings("dev-a", SIM_START, range(40, 45), temp_evaporator=-25.0)])
    _landed(write_readings(data_root, SIM_START, "a.parquet", grown), 4)
    run = _clean(resources, instance)
    assert metadata(run)["keys_replaced"][DAY]["clean_rows_after"] - metadata(run)["keys_replaced"][DAY]["clean_rows_before"] == 5
    assert clean_rows(spark, DAY).count() == 5 + 20 + 10 + 1 + 5
    _equals_its_rebuild(spark, resources, instance, run)

    # Gone: b's minutes 10-29 of dev-a leave the day; the run and a WARN check say how many.
    (folder / "b.parquet").unlink()
    run = _clean(resources, instance)
    md = metadata(run)
    assert _names(md["vanished_cleaned_files"]) == {"b.parquet"} and md["clean_rows_lost_to_vanished_files"] == 20
    vanished = checks(run)[CHECK_LANDING_FILES_VANISHED]
    assert not vanished.passed and vanished.severity == dg.AssetCheckSeverity.WARN
    assert vanished.metadata["observed"].value == 20 and vanished.metadata["vanished_files"].value == 1
    ledger = {Path(r["source_file"]).name: r["outcome"] for r in table(spark, LEDGER_TABLE).where(F.col("landing_date") == DAY).collect()}
    assert ledger == {"a.parquet": CLEANED, "b.parquet": VANISHED, "c.parquet": CLEANED, "d.csv": CLEANED}
    assert checks(run)["check_accounting_identity"].passed
    clean, quarantine, _ = _day(spark)
    rebuilt = _clean(resources, instance, rebuild=True)
    assert checks(rebuilt)["check_accounting_identity"].passed
    assert (_day(spark)[0], _day(spark)[1]) == (clean, quarantine)


@pytest.mark.unit
def test_a_cleaned_file_rewritten_or_gone_replaces_its_keys_and_one_gone_before_is_read_when_back():
    def status(name: str, size: int, mtime: int) -> FileStatus:
        return FileStatus(f"/landing/date={DAY}/{name}", f"file:/landing/date={DAY}/{name}", size, mtime)

    a, b = status("a.parquet", 10, 1), status("b.parquet", 20, 2)
    known = {DAY: {a.path: Entry(10, 1), b.path: Entry(20, 2)}}
    (day,) = plan([DAY], {DAY: [status("a.parquet", 11, 4), b]}, known, {DAY}, force=False)
    assert not day.rebuild and day.replaces_keys and [f.name for f in day.rewritten] == ["a.parquet"] == [f.name for f in day.new]
    (day,) = plan([DAY], {DAY: [a]}, known, {DAY}, force=False)
    assert day.replaces_keys and day.vanished == [b.path] and day.new == []
    known[DAY][b.path] = Entry(20, 2, vanished=True)
    (day,) = plan([DAY], {DAY: [a]}, known, {DAY}, force=False)
    assert not day.replaces_keys and day.to_read == []
    (day,) = plan([DAY], {DAY: [a, b]}, known, {DAY}, force=False)
    assert not day.replaces_keys and day.new == [b]


@pytest.mark.integration
def test_a_rewrite_rewrites_only_the_clean_files_holding_its_devices(spark, resources, instance, data_root):
    """A day's clean files each hold a slice of its devices, and the ledger each landing file's device
    range: a file rewritten costs the MERGE the clean files of its devices, not the whole day."""
    devices = [f"dev-{i:03d}" for i in range(8)]
    registry(data_root, devices)
    for i, device in enumerate(devices):
        _landed(write_readings(data_root, SIM_START, f"gw-{i}.parquet", readings(device, SIM_START, range(0, 60))), 1)
    materialize_registry(resources, instance)
    # The files of a day at the scale of a fleet, here: one per shuffle partition, none merged away.
    spark.conf.set("spark.sql.adaptive.coalescePartitions.enabled", "false")
    try:
        assert checks(_clean(resources, instance))["check_accounting_identity"].passed
    finally:
        spark.conf.unset("spark.sql.adaptive.coalescePartitions.enabled")
    clean = resources["delta"].path(CLEAN_TABLE)
    files = spark.read.format("delta").load(clean).where(F.col("reading_date") == DAY).select(F.input_file_name().alias("f"), "device_id")
    spans = {
        r["f"]: (r["lo"], r["hi"]) for r in files.groupBy("f").agg(F.min("device_id").alias("lo"), F.max("device_id").alias("hi")).collect()
    }
    assert len(spans) >= 2, spans
    holding = [f for f, (lo, hi) in spans.items() if lo <= "dev-005" <= hi]
    ledger = {Path(r["source_file"]).name: (r["device_id_min"], r["device_id_max"]) for r in table(spark, LEDGER_TABLE).collect()}
    assert ledger["gw-5.parquet"] == ("dev-005", "dev-005")

    _landed(write_readings(data_root, SIM_START, "gw-5.parquet", readings("dev-005", SIM_START, range(0, 60), temp_evaporator=-23.0)), 2)
    run = _clean(resources, instance)
    assert metadata(run)["keys_replaced"][DAY]["keys_touched"] == 60
    merge = DeltaTable.forPath(spark, clean).history(5).where(F.col("userMetadata").endswith("-clean-key-replace")).first()
    assert int(merge["operationMetrics"]["numTargetFilesRemoved"]) == len(holding) < len(spans)
    assert int(merge["operationMetrics"]["numTargetRowsCopied"]) < 60 * (len(devices) - 1)
    _equals_its_rebuild(spark, resources, instance, run)
