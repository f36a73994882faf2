"""Incremental ingest: a landing file is cleaned once, and a day built file by file equals its rebuild."""

import json
import os
import random
import shutil
import uuid
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from pyspark.sql import functions as F

from fs_assets.ingest.assets import clean_sensor_readings
from fs_checks.ingest_checks import check_clean_key_unique, ingest_checks
from fs_domain.contract import Reason
from fs_domain.tables import CLEAN_TABLE, LEDGER_TABLE
from fs_resources import settings
from fs_resources.delta import DeltaTables
from fs_resources.simulator.fleet import FleetSpec, generate
from fs_resources.spark import DeltaSparkResource
from tests.conftest import SIM_START
from tests.ingest_runs import checks, clean_rows, materialize_clean, materialize_registry, metadata, quarantine_rows
from tests.landing_files import day_folder, readings, registry, write_readings

pytestmark = pytest.mark.integration

DAY = SIM_START.isoformat()


def _rows(df, drop=()):
    columns = [c for c in df.columns if c not in drop]
    return sorted(tuple(str(v) for v in row) for row in df.select(*columns).collect())


def _clean(resources, instance, **config):
    return dg.materialize(
        [clean_sensor_readings, *ingest_checks], partition_key=DAY, resources=resources, instance=instance,
        run_config={"ops": {"clean_sensor_readings": {"config": config}}},
    )  # fmt: skip


def test_a_day_built_file_by_file_equals_its_rebuild_row_for_row(spark, resources, instance, data_root):
    spec = FleetSpec(devices=20, start=SIM_START, days=2, seed=5, outage_probability=0.5, late_outage_share=1.0,
                     duplicate_rate=0.02, conflict_rate=0.01, foreign_rows_per_day=6)  # fmt: skip
    generate(spec, str(data_root))
    folder = day_folder(data_root, SIM_START)
    aside = data_root / "aside"
    shutil.move(folder, aside)
    folder.mkdir()
    names = sorted(os.listdir(aside))
    random.Random(3).shuffle(names)  # arrival order must not matter: the latest *ingested* copy wins
    batches = [names[i::4] for i in range(4)]
    # A file's modification time is when it landed: keep them, so "latest ingested" is the same in both builds.
    materialize_registry(resources, instance)
    for i, batch in enumerate(batches):
        for name in batch:
            os.rename(aside / name, folder / name)
        result = materialize_clean(resources, instance, DAY, with_checks=False)
        md = metadata(result)
        assert checks(result)["check_accounting_identity"].passed, md["accounting"]
        assert md["files_read"] == len(batch) and md["files_already_cleaned"] == sum(len(b) for b in batches[:i])
    incremental = _rows(clean_rows(spark, DAY))
    incremental_quarantine = _rows(quarantine_rows(spark, DAY), drop=("quarantined_at",))
    assert metadata(materialize_clean(resources, instance, DAY, with_checks=False))["files_read"] == 0  # nothing new: nothing read

    rebuilt = _clean(resources, instance, rebuild=True)
    assert checks(rebuilt)["check_accounting_identity"].passed
    assert metadata(rebuilt)["files_read"] == len(names)
    assert _rows(clean_rows(spark, DAY)) == incremental
    assert _rows(quarantine_rows(spark, DAY), drop=("quarantined_at",)) == incremental_quarantine
    assert len(incremental) > 0 and len(incremental_quarantine) > 0


def test_a_batch_cut_short_before_its_ledger_is_finished_by_the_next_run(spark, resources, instance, data_root):
    registry(data_root, ["dev-a"])
    write_readings(data_root, SIM_START, "a.parquet", readings("dev-a", SIM_START, range(0, 10)))
    materialize_registry(resources, instance)
    materialize_clean(resources, instance, DAY)
    write_readings(data_root, SIM_START, "b.parquet", readings("dev-a", SIM_START, range(5, 20)))
    first = materialize_clean(resources, instance, DAY)
    assert metadata(first)["clean_rows_added"] == 10 and metadata(first)["duplicates_dropped"] == 5
    after = _rows(clean_rows(spark, DAY))
    # As if the run had been killed after writing clean rows, before its ledger commit: that commit never happened.
    delta = DeltaTables(spark=DeltaSparkResource())
    log = Path(delta.path(LEDGER_TABLE)) / "_delta_log"
    version = delta.version(LEDGER_TABLE)
    for leftover in [*log.glob(f"{version:020d}.*"), *log.glob(f".{version:020d}.*")]:  # the commit and Hadoop's checksums
        leftover.unlink()
    again = materialize_clean(resources, instance, DAY)
    assert metadata(again)["batch_id"] == metadata(first)["batch_id"]
    assert (metadata(again)["clean_rows_added"], metadata(again)["duplicates_dropped"]) == (10, 5)
    assert checks(again)["check_accounting_identity"].passed
    assert _rows(clean_rows(spark, DAY)) == after
    assert quarantine_rows(spark, DAY).count() == 0


def test_a_file_uri_root_is_listed_and_read_through_spark(spark, resources, instance, data_root, monkeypatch):
    registry(data_root, ["dev-a"])
    write_readings(data_root, SIM_START, "a.parquet", readings("dev-a", SIM_START, range(0, 10)))
    (day_folder(data_root, SIM_START) / "b.csv").write_text("device_id,ts,temp_evaporator\ndev-a,2026-01-05T01:00:00Z,-20\n")
    monkeypatch.setenv("FS_DATA_ROOT", f"file://{data_root}")
    assert settings.landing_root().startswith("file://")
    materialize_registry(resources, instance)
    result = materialize_clean(resources, instance, DAY)
    md = metadata(result)
    assert md["files_read"] == 2 and md["clean_rows_added"] == 11
    assert md["delta_path"].startswith("file://")
    sources = {r["source_file"] for r in clean_rows(spark, DAY).select("source_file").distinct().collect()}
    assert sources == {f"file:{data_root}/landing/date={DAY}/a.parquet", f"file:{data_root}/landing/date={DAY}/b.csv"}


def test_poison_files_beside_good_ones_are_quarantined_by_name_and_the_day_is_ingested(spark, resources, instance, data_root):
    registry(data_root, ["dev-a"])
    folder = day_folder(data_root, SIM_START)
    write_readings(data_root, SIM_START, "good.parquet", readings("dev-a", SIM_START, range(0, 10)))
    write_readings(data_root, SIM_START, "too-many-rows.parquet", readings("dev-a", SIM_START, range(100, 160)))
    (folder / "wide-header.csv").write_text("device_id,ts," + ",".join(f"c{i}" for i in range(400)) + "\ndev-a,2026-01-05T05:00:00Z\n")
    good = json.dumps({"device_id": "dev-a", "ts": "2026-01-05T06:00:00Z", "temp_evaporator": -20})
    (folder / "deep.jsonl").write_text(good + "\n" + "[" * 100_000 + "]" * 100_000 + "\n" + good.replace("06:00", "06:01") + "\n")
    (folder / "big.csv").write_text("x" * 300_000)
    materialize_registry(resources, instance)
    result = _clean(resources, instance, max_file_rows=50, max_line_chars=1000, max_file_bytes=250_000)
    assert result.success and checks(result)["check_accounting_identity"].passed
    md = metadata(result)
    assert set(md["over_limit_files"]) == {str(folder / n) for n in ("too-many-rows.parquet", "wide-header.csv", "big.csv")}
    assert "max_rows" in md["over_limit_files"][str(folder / "too-many-rows.parquet")]
    assert "max_line_chars" in md["over_limit_files"][str(folder / "wide-header.csv")]
    assert "max_bytes" in md["over_limit_files"][str(folder / "big.csv")]
    quarantined = pd.DataFrame([r.asDict() for r in quarantine_rows(spark, DAY).collect()])
    by_file = quarantined.groupby(quarantined["source_file"].str.rsplit("/", n=1).str[-1])["reason"].agg(list).to_dict()
    assert by_file == {
        "too-many-rows.parquet": [Reason.FILE_OVER_LIMIT],
        "wide-header.csv": [Reason.FILE_OVER_LIMIT],
        "big.csv": [Reason.FILE_OVER_LIMIT],
        "deep.jsonl": [Reason.SCHEMA_MISMATCH],
    }
    deep = quarantined[quarantined["reason"] == Reason.SCHEMA_MISMATCH].iloc[0]
    assert deep["source_row"] == 1 and len(deep["raw_payload"]) <= 1000
    assert clean_rows(spark, DAY).count() == 12  # good.parquet and both good lines of deep.jsonl


@pytest.mark.integration
def test_after_an_incremental_run_the_null_fraction_is_that_of_the_rows_it_merged(resources, instance, data_root):
    registry(data_root, ["dev-a"])
    write_readings(data_root, SIM_START, "a.parquet", readings("dev-a", SIM_START, range(0, 200)))
    materialize_registry(resources, instance)
    first = checks(materialize_clean(resources, instance, DAY))["check_sensor_null_fraction"]
    assert first.passed and first.metadata["readings"].value == 200
    # Ten readings whose vibration sensor is dead: under 5 % of the day, all of the run's.
    write_readings(data_root, SIM_START, "b.parquet", readings("dev-a", SIM_START, range(200, 210), vibration_compressor=None))
    second = checks(materialize_clean(resources, instance, DAY))["check_sensor_null_fraction"]
    assert second.metadata["scope"].value.startswith("rows merged by this run")
    assert second.metadata["readings"].value == 10 and second.metadata["null_fraction_vibration_compressor"].value == 1.0
    assert not second.passed and "vibration_compressor" in second.description


def test_after_an_incremental_run_the_key_check_judges_the_keys_it_merged(spark, resources, instance, data_root):
    registry(data_root, ["dev-a"])
    write_readings(data_root, SIM_START, "a.parquet", readings("dev-a", SIM_START, range(0, 10)))
    materialize_registry(resources, instance)
    first = materialize_clean(resources, instance, DAY)
    assert checks(first)["check_clean_key_unique"].metadata["scope"].value.startswith("whole partitions (this run replaced them)")
    write_readings(data_root, SIM_START, "b.parquet", readings("dev-a", SIM_START, range(15, 20)))
    second = materialize_clean(resources, instance, DAY)
    assert checks(second)["check_clean_key_unique"].passed
    assert checks(second)["check_clean_key_unique"].metadata["scope"].value.startswith("rows merged by this run")

    # A run whose merge inserts a key twice (what a broken de-duplication would commit), beside a duplicate no run merged.
    run_id = str(uuid.uuid4())
    delta = DeltaTables(spark=DeltaSparkResource())
    held = clean_rows(spark, DAY)
    twice = held.where("minute(ts) = 3").withColumn("ts", F.expr("ts + INTERVAL 30 MINUTES"))
    delta.merge(twice.unionByName(twice), CLEAN_TABLE, "t.device_id = s.device_id AND t.ts = s.ts", run_id=run_id)
    held.where("minute(ts) = 2").write.format("delta").mode("append").save(delta.path(CLEAN_TABLE))
    job = dg.Definitions(
        assets=[clean_sensor_readings],
        asset_checks=[check_clean_key_unique],
        jobs=[dg.define_asset_job("clean", selection=[clean_sensor_readings.key])],
        resources=resources,
    ).resolve_job_def("clean")
    only_the_check = {"op_selection": ["clean_sensor_readings_check_clean_key_unique"], "partition_key": DAY, "raise_on_error": False}

    scoped = checks(job.execute_in_process(run_id=run_id, instance=instance, **only_the_check))
    unique = scoped["check_clean_key_unique"]
    assert unique.metadata["scope"].value.startswith("rows merged by this run")
    assert not unique.passed and unique.metadata["duplicate_keys"].value == 1
    assert unique.metadata["sample"].value == "dev-a @ 2026-01-05T00:33:00 x2"
    # Run alone, the check judges the day whole and finds the other one too.
    whole = checks(job.execute_in_process(instance=instance, **only_the_check))["check_clean_key_unique"]
    assert whole.metadata["scope"].value.startswith("whole partitions (this run wrote no clean readings)")
    assert whole.metadata["duplicate_keys"].value == 2


def test_a_batch_cut_short_and_resumed_by_a_different_batch_records_each_row_once(spark, resources, instance, data_root):
    registry(data_root, ["dev-a"])
    stranger = readings("dev-x", SIM_START, range(0, 3))
    write_readings(data_root, SIM_START, "a.parquet", pd.concat([readings("dev-a", SIM_START, range(0, 10)), stranger]))
    materialize_registry(resources, instance)
    materialize_clean(resources, instance, DAY)
    write_readings(data_root, SIM_START, "b.parquet", pd.concat([readings("dev-a", SIM_START, range(5, 20)), stranger]))
    first = materialize_clean(resources, instance, DAY)
    # Killed after its clean rows and quarantine records were written, before its ledger commit...
    delta = DeltaTables(spark=DeltaSparkResource())
    log = Path(delta.path(LEDGER_TABLE)) / "_delta_log"
    version = delta.version(LEDGER_TABLE)
    for leftover in [*log.glob(f"{version:020d}.*"), *log.glob(f".{version:020d}.*")]:
        leftover.unlink()
    # ...and a new file landed before the retry: the next run is another batch, holding both files.
    write_readings(data_root, SIM_START, "c.parquet", pd.concat([readings("dev-a", SIM_START, range(30, 35)), stranger]))
    again = materialize_clean(resources, instance, DAY)
    assert metadata(again)["batch_id"] != metadata(first)["batch_id"] and metadata(again)["files_read"] == 2
    assert checks(again)["check_accounting_identity"].passed, metadata(again)["accounting"]
    held = quarantine_rows(spark, DAY)
    assert held.count() == 9 and held.select("source_file", "source_row").distinct().count() == 9
    incremental = _rows(clean_rows(spark, DAY))
    assert len(incremental) == 25

    rebuilt = _clean(resources, instance, rebuild=True)
    assert checks(rebuilt)["check_accounting_identity"].passed
    assert _rows(clean_rows(spark, DAY)) == incremental
