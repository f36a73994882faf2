"""Nothing lost at the edges of the landing zone: any file name is read as itself, a read that fails in
a way that may pass is retried (and fails the run rather than judge the file), and only a file whose
bytes are refused for good is quarantined, marked refused in the ledger and read again once fixed."""

from __future__ import annotations

import json
import struct
import threading
import time
import zlib
from pathlib import Path

import dagster as dg
import pytest
from pyspark.sql import functions as F

from fs_assets.ingest.accounting import DayBooks, Judged, ReadInPart, accounting_check_spec, evaluate_accounting
from fs_assets.ingest.assets import clean_sensor_readings
from fs_assets.ingest.cleaning import PartitionAccounting
from fs_assets.ingest.ledger import CLEANED, REFUSED, Entry, plan
from fs_checks.ingest_checks import ingest_checks
from fs_checks.landing_checks import CHECK_LANDING_FILES_REFUSED, landing_checks
from fs_domain.contract import LANDING_COLUMNS, SENSOR_NAMES, Reason
from fs_domain.tables import CLEAN_TABLE, LEDGER_TABLE, QUARANTINE_TABLE
from fs_resources.filesystem import FileStatus
from tests.conftest import SIM_START
from tests.ingest_runs import checks, clean_rows, materialize_registry, metadata, quarantine_rows, table
from tests.landing_files import day_folder, readings, registry, write_readings

DAY = SIM_START.isoformat()
HEADER = ",".join(LANDING_COLUMNS)
# Hadoop's local filesystem checks a file's bytes against its `.<name>.crc` in 512-byte chunks.
CHUNK = 512


def _clean(resources, instance, raise_on_error: bool = True, **config) -> dg.ExecuteInMemoryResult:
    config = {"read_attempts": 5, "read_backoff_seconds": 0.5} | config
    return dg.materialize(
        [clean_sensor_readings, *ingest_checks, *landing_checks], partition_key=DAY, resources=resources, instance=instance,
        run_config={"ops": {"clean_sensor_readings": {"config": config}}}, raise_on_error=raise_on_error,
    )  # fmt: skip


def _csv_row(device_id: str, minute: int, first: float, columns=LANDING_COLUMNS) -> str:
    values = {"device_id": device_id, "ts": f"{DAY}T00:{minute:02d}:00Z"} | {s: str(first + i) for i, s in enumerate(SENSOR_NAMES)}
    return ",".join(values[c] for c in columns)


def _ledger(spark) -> dict[str, str]:
    rows = table(spark, LEDGER_TABLE).where(F.col("landing_date") == DAY).select("source_file", "outcome").collect()
    return {Path(r["source_file"]).name: r["outcome"] for r in rows}


def _by_key(spark) -> dict[tuple[str, str], dict]:
    """Clean rows by (device, HH:MM), checking that no key is held twice."""
    rows = [r.asDict() for r in clean_rows(spark, DAY).collect()]
    keyed = {(r["device_id"], r["ts"].strftime("%H:%M")): r for r in rows}
    assert len(keyed) == len(rows)
    return keyed


def _bad_checksums(path: Path, chunks: range | None = None) -> Path:
    """A checksum file under which Hadoop's local filesystem fails to read `chunks` of `path` (all when None)."""
    data = path.read_bytes()
    sums = [zlib.crc32(data[i : i + CHUNK]) for i in range(0, len(data), CHUNK)]
    for i in chunks if chunks is not None else range(len(sums)):
        sums[i] ^= 0xFFFFFFFF
    crc = path.with_name(f".{path.name}.crc")
    crc.write_bytes(b"crc\x00" + struct.pack(">i", CHUNK) + b"".join(struct.pack(">I", s) for s in sums))
    return crc


class FaultClearedAfterFailure(threading.Thread):
    """Removes each fault once the run has logged a failed read of its file: the retry is what reads it."""

    def __init__(self, instance, faults: dict[str, Path]):
        super().__init__(daemon=True)
        self.instance, self.faults, self.cleared = instance, dict(faults), []
        self.done = threading.Event()

    def run(self) -> None:
        while self.faults and not self.done.is_set():
            for run in self.instance.get_runs(limit=1):
                messages = [e.user_message or "" for e in self.instance.all_logs(run.run_id)]
                for name, fault in list(self.faults.items()):
                    if any("read failed, attempt" in m and name in m for m in messages):
                        fault.unlink()
                        self.cleared.append(name)
                        del self.faults[name]
            time.sleep(0.1)


@pytest.mark.integration
@pytest.mark.parametrize("spelling", ["local", "file_uri"])
def test_a_day_of_oddly_named_files_arrives_whole_each_row_once_with_its_own_values(
    spark, resources, instance, data_root, monkeypatch, spelling
):
    if spelling == "file_uri":
        monkeypatch.setenv("FS_DATA_ROOT", f"file://{data_root}")
    registry(data_root, [f"dev-{i}" for i in range(12)])
    folder = day_folder(data_root, SIM_START)
    parquet = ["gw{a,b}.parquet", "gwa.parquet", "gwb.parquet", "gw ?.parquet", "gw[1].parquet", "gw1.parquet"]
    for i, name in enumerate(parquet):
        write_readings(data_root, SIM_START, name, readings(f"dev-{i}", SIM_START, range(i, i + 2), temp_evaporator=float(-i)))
    reordered = tuple(reversed(LANDING_COLUMNS))
    (folder / "gw*.csv").write_text(HEADER + "\n" + _csv_row("dev-6", 10, 1.0) + "\n")
    (folder / "gwA.csv").write_text(",".join(reordered) + "\n" + _csv_row("dev-7", 11, 2.0, reordered) + "\n")
    (folder / "grüße 100%.csv").write_text(HEADER + "\n" + _csv_row("dev-8", 12, 3.0) + "\n")
    (folder / "gw[1].jsonl").write_text(json.dumps({"device_id": "dev-9", "ts": f"{DAY}T00:13:00Z", "temp_evaporator": -1}) + "\n")
    (folder / "gw1.jsonl").write_text(json.dumps({"device_id": "dev-10", "ts": f"{DAY}T00:14:00Z", "temp_evaporator": -2}) + "\n")
    (folder / "a:b.csv").write_text(HEADER + "\n" + _csv_row("dev-11", 15, 4.0) + "\n")  # a name Hadoop cannot open
    materialize_registry(resources, instance)

    result = _clean(resources, instance)
    assert checks(result)["check_accounting_identity"].passed
    md = metadata(result)
    assert (md["raw_rows"], md["quarantined_rows"], md["duplicates_dropped"]) == (2 * len(parquet) + 5 + 1, 1, 0)
    rows = _by_key(spark)
    assert len(rows) == 2 * len(parquet) + 5
    for i, name in enumerate(parquet):
        for minute in (i, i + 1):
            row = rows[(f"dev-{i}", f"00:{minute:02d}")]
            assert Path(row["source_file"]).name == name and row["temp_evaporator"] == float(-i)
    for device, minute, first, name in [
        ("dev-6", 10, 1.0, "gw*.csv"),
        ("dev-7", 11, 2.0, "gwA.csv"),
        ("dev-8", 12, 3.0, "grüße 100%.csv"),
    ]:
        row = rows[(device, f"00:{minute}")]
        assert Path(row["source_file"]).name == name
        assert [row[s] for s in SENSOR_NAMES] == [first + i for i in range(len(SENSOR_NAMES))], name
    assert Path(rows[("dev-9", "00:13")]["source_file"]).name == "gw[1].jsonl"
    assert Path(rows[("dev-10", "00:14")]["source_file"]).name == "gw1.jsonl"
    (record,) = quarantine_rows(spark, DAY).collect()
    assert (Path(record["source_file"]).name, record["reason"]) == ("a:b.csv", Reason.UNREADABLE_FILE)
    assert "cannot be opened by its name" in record["detail"]
    ledger = _ledger(spark)
    assert ledger.pop("a:b.csv") == REFUSED and set(ledger.values()) == {CLEANED} and len(ledger) == len(parquet) + 5


@pytest.mark.integration
def test_a_read_that_fails_then_passes_is_retried_and_the_file_arrives(spark, resources, instance, data_root):
    registry(data_root, ["dev-a", "dev-b", "dev-c"])
    folder = day_folder(data_root, SIM_START)
    write_readings(data_root, SIM_START, "good.parquet", readings("dev-a", SIM_START, range(0, 5)))
    # Its footer read fails: the per-file gate retries it.
    flaky_footer = write_readings(data_root, SIM_START, "flaky-footer.parquet", readings("dev-b", SIM_START, range(0, 5)))
    # Its first line reads, a later chunk does not: Spark's read of the day fails on it and is retried.
    lines = [json.dumps({"device_id": "dev-c", "ts": f"{DAY}T01:{m:02d}:00Z"} | {s: 1.0 for s in SENSOR_NAMES}) for m in range(30)]
    flaky_rows = folder / "flaky-rows.jsonl"
    flaky_rows.write_text("\n".join(lines) + "\n")
    assert flaky_rows.stat().st_size > 4 * CHUNK
    faults = {"flaky-footer.parquet": _bad_checksums(flaky_footer), "flaky-rows.jsonl": _bad_checksums(flaky_rows, range(3, 4))}
    materialize_registry(resources, instance)

    watcher = FaultClearedAfterFailure(instance, faults)
    watcher.start()
    try:
        result = _clean(resources, instance)
    finally:
        watcher.done.set()
    assert sorted(watcher.cleared) == sorted(faults)  # each file's first read failed
    assert checks(result)["check_accounting_identity"].passed
    md = metadata(result)
    assert (md["raw_rows"], md["clean_rows_added"], md["quarantined_rows"]) == (40, 40, 0)
    assert md["unreadable_files"] == {}
    assert quarantine_rows(spark, DAY).count() == 0
    assert _ledger(spark) == {"good.parquet": CLEANED, "flaky-footer.parquet": CLEANED, "flaky-rows.jsonl": CLEANED}


@pytest.mark.integration
def test_a_read_that_keeps_failing_fails_the_run_and_records_nothing(spark, resources, instance, data_root):
    registry(data_root, ["dev-a", "dev-b"])
    write_readings(data_root, SIM_START, "good.parquet", readings("dev-a", SIM_START, range(0, 5)))
    flaky = write_readings(data_root, SIM_START, "flaky.parquet", readings("dev-b", SIM_START, range(0, 5)))
    fault = _bad_checksums(flaky)
    materialize_registry(resources, instance)

    failed = _clean(resources, instance, raise_on_error=False, read_attempts=2, read_backoff_seconds=0.1)
    assert not failed.success
    (failure,) = [e for e in failed.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "flaky.parquet" in failure.step_failure_data.error.message and "Tried 2 times" in failure.step_failure_data.error.message
    # Nothing written, the file not recorded: the next run reads it again.
    assert not any(resources["delta"].exists(t) for t in (CLEAN_TABLE, QUARANTINE_TABLE, LEDGER_TABLE))

    fault.unlink()  # the storage recovers
    result = _clean(resources, instance)
    assert checks(result)["check_accounting_identity"].passed
    assert metadata(result)["clean_rows_added"] == 10
    assert _ledger(spark) == {"good.parquet": CLEANED, "flaky.parquet": CLEANED}


def _corrupt_a_page(path: Path) -> None:
    """Bytes flipped in the middle of a compressed Parquet file: its footer reads, a page does not decompress."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))


@pytest.mark.integration
def test_a_corrupt_file_is_refused_and_read_again_once_fixed(spark, resources, instance, data_root):
    registry(data_root, ["dev-a", "dev-b", "dev-c"])
    folder = day_folder(data_root, SIM_START)
    write_readings(data_root, SIM_START, "good.parquet", readings("dev-a", SIM_START, range(0, 5)))
    bad_page = write_readings(data_root, SIM_START, "bad-page.parquet", readings("dev-b", SIM_START, range(0, 1440)))
    _corrupt_a_page(bad_page)
    (folder / "bad-magic.parquet").write_bytes(b"PAR1 these bytes are no Parquet file")
    materialize_registry(resources, instance)

    first = _clean(resources, instance)
    assert checks(first)["check_accounting_identity"].passed
    md = metadata(first)
    assert sorted(Path(p).name for p in md["unreadable_files"]) == ["bad-magic.parquet", "bad-page.parquet"]
    assert (md["raw_rows"], md["clean_rows_added"], md["quarantined_rows"]) == (7, 5, 2)
    records = {Path(r["source_file"]).name: r for r in quarantine_rows(spark, DAY).collect()}
    assert {n: r["reason"] for n, r in records.items()} == {
        "bad-magic.parquet": Reason.UNREADABLE_FILE,
        "bad-page.parquet": Reason.UNREADABLE_FILE,
    }
    assert "Expected magic number" in records["bad-magic.parquet"]["detail"]
    assert "FAILED_READ_FILE" in records["bad-page.parquet"]["detail"]
    assert _ledger(spark) == {"good.parquet": CLEANED, "bad-page.parquet": REFUSED, "bad-magic.parquet": REFUSED}
    assert {k[0] for k in _by_key(spark)} == {"dev-a"}
    # Nothing else would say two files' readings are missing: this check pages until they are dealt with.
    refused = checks(first)[CHECK_LANDING_FILES_REFUSED]
    assert not refused.passed and refused.severity == dg.AssetCheckSeverity.ERROR
    assert (refused.metadata["observed"].value, refused.metadata["threshold"].value) == (2, 0)

    # The producer sends the file again, whole (docs/operator_guide.md, "Landing files refused or failing to read").
    write_readings(data_root, SIM_START, "bad-page.parquet", readings("dev-b", SIM_START, range(0, 1440)))
    again = _clean(resources, instance)
    assert checks(again)["check_accounting_identity"].passed
    md = metadata(again)
    assert md["files_read"] == 1 and "refused file(s) changed since" in md["mode"][DAY]
    assert (md["raw_rows"], md["clean_rows_added"], md["quarantined_rows"]) == (1440, 1440, 0)
    assert _ledger(spark) == {"good.parquet": CLEANED, "bad-page.parquet": CLEANED, "bad-magic.parquet": REFUSED}
    assert [Path(r["source_file"]).name for r in quarantine_rows(spark, DAY).collect()] == ["bad-magic.parquet"]
    incremental = sorted(_by_key(spark))
    assert len(incremental) == 1445
    assert checks(again)[CHECK_LANDING_FILES_REFUSED].metadata["observed"].value == 1
    # The operator deletes the file that cannot be fixed: the next run's check passes (the incident resolves).
    (folder / "bad-magic.parquet").unlink()
    cleared = _clean(resources, instance)
    assert checks(cleared)[CHECK_LANDING_FILES_REFUSED].passed

    rebuilt = _clean(resources, instance, rebuild=True)
    assert checks(rebuilt)["check_accounting_identity"].passed
    assert sorted(_by_key(spark)) == incremental
    assert _ledger(spark) == {"good.parquet": CLEANED, "bad-page.parquet": CLEANED}  # the deleted file is no longer the day's


@pytest.mark.unit
def test_a_refused_file_that_changes_is_read_again_alone_and_a_cleaned_one_replaces_its_keys():
    def status(name: str, size: int, mtime: int) -> FileStatus:
        return FileStatus(f"/landing/date={DAY}/{name}", f"file:/landing/date={DAY}/{name}", size, mtime)

    listed = {DAY: [status("a.parquet", 10, 1), status("fixed.parquet", 20, 5), status("still-bad.parquet", 30, 3)]}
    known = {DAY: {"a.parquet": (10, 1, False), "fixed.parquet": (21, 2, True), "still-bad.parquet": (30, 3, True)}}
    known = {day: {f"/landing/date={DAY}/{n}": Entry(*e) for n, e in entries.items()} for day, entries in known.items()}
    (day,) = plan([DAY], listed, known, {DAY}, force=False)
    assert not day.rebuild and [f.name for f in day.to_read] == ["fixed.parquet"] and day.readmitted == day.new
    # A refused file removed is no reason to rebuild: nothing of it is in the day.
    (day,) = plan([DAY], {DAY: listed[DAY][:1]}, known, {DAY}, force=False)
    assert not day.rebuild and day.to_read == []
    # A cleaned file rewritten has its keys judged again, without a rebuild.
    (day,) = plan([DAY], {DAY: [status("a.parquet", 11, 4), *listed[DAY][1:]]}, known, {DAY}, force=False)
    assert not day.rebuild and day.replaces_keys and "judged again" in day.why


@pytest.mark.unit
def test_a_file_read_in_part_fails_the_blocking_books_of_its_day():
    books = {DAY: PartitionAccounting(DAY, raw_rows=5, clean_rows=5)}
    days = {DAY: DayBooks(DAY, raw_rows=5, clean_rows_added=5, clean_in_table=5)}
    judged = Judged.of([DAY], "a-run")
    assert evaluate_accounting(books, days, judged).passed
    result = evaluate_accounting(books, days, judged, {"/landing/a.parquet": ReadInPart(DAY, 5, 8)})
    assert accounting_check_spec.blocking and result.severity == dg.AssetCheckSeverity.ERROR and not result.passed
    assert result.metadata["imbalance_rows"].value == 3
    assert result.metadata["files_read_in_part"].value == {"/landing/a.parquet": "5 of 8 rows could be read"}
