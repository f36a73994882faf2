"""Reading the landing zone: listing through the filesystem layer, and Spark reading every format typed."""

import json
import os
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fs_assets.ingest import landing
from fs_assets.ingest.read_failures import ReadPolicy
from fs_domain.contract import LANDING_COLUMNS, SENSOR_NAMES, FileLimits, Reason
from fs_resources.filesystem import HadoopFileSystem, LocalFileSystem
from tests.landing_files import day_folder, readings, write_readings

DAY = date(2026, 1, 5)
HEADER = ",".join(LANDING_COLUMNS)
QUICK = ReadPolicy(attempts=2, backoff_seconds=0.1)


def _root(tmp_path) -> str:
    return str(tmp_path / "landing")


def _staged(spark, tmp_path, limits=None):
    fs = HadoopFileSystem(spark)
    files = landing.list_landing_files(fs, _root(tmp_path), DAY)
    staged = landing.read_landing(spark, fs, {DAY.isoformat(): files}, limits)
    rows = [r.asDict() for r in staged.with_paths(staged.rows).collect()]
    return {os.path.basename(r["source_file"]): [x for x in rows if x["source_file"] == r["source_file"]] for r in rows}, staged.report


@pytest.mark.unit
def test_in_flight_files_are_not_listed_and_fingerprint_moves_on_change(tmp_path):
    folder = day_folder(tmp_path, DAY)
    write_readings(tmp_path, DAY, "a.parquet", readings("dev-1", DAY, range(2)))
    (folder / ".b.parquet.tmp").write_bytes(b"partial")
    fs = LocalFileSystem()
    files = landing.list_landing_files(fs, _root(tmp_path), DAY)
    assert [f.name for f in files] == ["a.parquet"]
    before = landing.fingerprint(files)
    write_readings(tmp_path, DAY, "late.parquet", readings("dev-1", DAY, range(5, 6)))
    assert landing.fingerprint(landing.list_landing_files(fs, _root(tmp_path), DAY)) != before


@pytest.mark.unit
def test_other_formats_and_symbolic_links_are_reported_not_read(tmp_path):
    folder = day_folder(tmp_path, DAY)
    (folder / "readings.json").write_text("{}")
    (folder / "readings.csv.gz").write_bytes(b"\x1f\x8b")
    outside = tmp_path / "secret.csv"
    outside.write_text(HEADER + "\n")
    (folder / "link.csv").symlink_to(outside)
    (tmp_path / "landing" / "date=2026-01-06").symlink_to(folder)
    fs = LocalFileSystem()
    assert landing.ignored_files(fs, _root(tmp_path), DAY) == [str(folder / n) for n in ("link.csv", "readings.csv.gz", "readings.json")]
    assert landing.list_landing_files(fs, _root(tmp_path), DAY) == []
    assert landing.landing_partition_keys(fs, _root(tmp_path)) == ["2026-01-05"]


@pytest.mark.integration
def test_listing_through_spark_sees_what_the_local_listing_sees(spark, tmp_path):
    write_readings(tmp_path, DAY, "a.parquet", readings("dev-1", DAY, range(2)))
    (day_folder(tmp_path, DAY) / "b.csv").write_text(HEADER + "\n")
    (day_folder(tmp_path, DAY) / "link.csv").symlink_to(day_folder(tmp_path, DAY) / "b.csv")
    local, hadoop = LocalFileSystem(), HadoopFileSystem(spark)
    assert landing.list_landing_files(hadoop, _root(tmp_path), DAY) == landing.list_landing_files(local, _root(tmp_path), DAY)
    uri_root = f"file://{_root(tmp_path)}"
    assert [f.name for f in landing.list_landing_files(hadoop, uri_root, DAY)] == ["a.parquet", "b.csv"]
    assert landing.landing_partition_keys(hadoop, uri_root) == ["2026-01-05"]


@pytest.mark.integration
def test_parquet_is_read_typed_and_csv_and_jsonl_keep_their_text(spark, tmp_path):
    write_readings(tmp_path, DAY, "a.parquet", readings("dev-1", DAY, range(3), temp_evaporator=0.1 + 0.2))
    folder = day_folder(tmp_path, DAY)
    aware = pa.table(
        {"device_id": ["d"], "ts": pa.array([1767610800000000], pa.timestamp("us", tz="Europe/Moscow"))} | {s: [1.0] for s in SENSOR_NAMES}
    )
    pq.write_table(aware, folder / "aware.parquet")
    (folder / "c.csv").write_text(
        HEADER + "\ndev-1,2026-01-05T00:00:00Z,-20,40,70,8,15,2,abc\ndev-1,2026-01-05T00:01:00Z,,40,70,8,15,2,2\n"
    )
    row = dict(zip(LANDING_COLUMNS, ["dev-1", "2026-01-05T00:00:00+01:00", float("nan"), 40, 70.5, None, "15", 2, 2]))
    (folder / "d.jsonl").write_text(json.dumps(row) + "\n\nnot json\n[1, 2]\n")
    rows, _ = _staged(spark, tmp_path)
    parquet = rows["a.parquet"]
    assert [r["temp_evaporator_value"] for r in parquet] == [0.1 + 0.2] * 3 and parquet[0]["temp_evaporator_text"] is None
    assert sorted(r["source_row"] for r in parquet) == [0, 1, 2]
    assert rows["aware.parquet"][0]["ts_value"] == datetime(2026, 1, 5, 11, 0)  # an offset is converted to UTC
    csv_rows = sorted(rows["c.csv"], key=lambda r: r["row_order"])
    assert [r["vibration_compressor_text"] for r in csv_rows] == ["abc", "2"]
    assert [r["vibration_compressor_value"] for r in csv_rows] == [None, 2.0]
    assert [r["temp_evaporator_text"] for r in csv_rows] == ["-20", None]
    good, *bad = sorted(rows["d.jsonl"], key=lambda r: r["row_order"])
    assert good["temp_evaporator_text"] == "NaN" and good["current_compressor_text"] is None and good["pressure_high_value"] == 15.0
    assert good["ts_value"] == datetime(2026, 1, 4, 23, 0)
    assert [r["file_error"] for r in bad] == [Reason.SCHEMA_MISMATCH] * 2 and [r["raw_payload"] for r in bad] == ["not json", "[1, 2]"]


@pytest.mark.integration
def test_ragged_rows_corrupt_empty_and_vanished_files_are_records_naming_them(spark, tmp_path):
    folder = day_folder(tmp_path, DAY)
    (folder / "r.csv").write_text(HEADER + "\ndev-1,2026-01-05T00:00:00Z,1,2,3,4,5,6,7\ndev-1,2026-01-05T00:01:00Z,1,2,3,4,5,6,7,8\n")
    (folder / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet")
    (folder / "zero.parquet").write_bytes(b"")
    (folder / "empty.csv").write_text("")
    fs = HadoopFileSystem(spark)
    files = landing.list_landing_files(fs, _root(tmp_path), DAY)
    (folder / "gone.parquet").write_bytes(b"x")
    gone = [f for f in landing.list_landing_files(fs, _root(tmp_path), DAY) if f.name == "gone.parquet"]
    os.remove(folder / "gone.parquet")
    staged = landing.read_landing(spark, fs, {DAY.isoformat(): files + gone}, policy=QUICK)
    report = staged.report
    assert set(report.unreadable_files) == {str(folder / n) for n in ("corrupt.parquet", "zero.parquet")}
    assert "Expected magic number" in report.unreadable_files[str(folder / "corrupt.parquet")]
    # Gone before it was read: no verdict on what was never seen; a later listing that holds it reads it.
    assert report.vanished_files == [str(folder / "gone.parquet")]
    assert report.empty_files == [str(folder / "empty.csv")]
    rows = [r.asDict() for r in staged.with_paths(staged.rows).collect()]
    ragged = sorted((r for r in rows if r["source_file"].endswith("r.csv")), key=lambda r: r["row_order"])
    assert [r["file_error"] for r in ragged] == [None, Reason.SCHEMA_MISMATCH]
    records = [r for r in rows if r["file_error"] == Reason.UNREADABLE_FILE]
    assert len(records) == 2 and all(json.loads(r["raw_payload"])["file"] == r["source_file"] for r in records)
    assert not [r for r in rows if r["source_file"].endswith("gone.parquet")]


@pytest.mark.integration
def test_bom_latin1_and_nested_values_keep_every_row(spark, tmp_path):
    folder = day_folder(tmp_path, DAY)
    (folder / "bom.csv").write_bytes(("\ufeff" + HEADER + "\ndev-1,2026-01-05T00:00:00Z,1,2,3,4,5,6,7\n").encode("utf-8"))
    (folder / "latin1.csv").write_bytes(
        (HEADER + "\ndév-1,2026-01-05T00:00:00Z,1,2,3,4,5,6,7\ndev-2,2026-01-05T00:00:00Z,1,2,3,4,5,6,7\n").encode("latin-1")
    )
    nested = pa.table({c: pa.array([{"a": 1}]) if c == "temp_evaporator" else pa.array(["x"]) for c in LANDING_COLUMNS})
    pq.write_table(nested, folder / "nested.parquet")
    rows, report = _staged(spark, tmp_path)
    assert [r["file_error"] for r in rows["bom.csv"]] == [None] and rows["bom.csv"][0]["device_id"] == "dev-1"
    assert sorted(r["device_id"] for r in rows["latin1.csv"])[0] == "dev-2"
    (value,) = rows["nested.parquet"]
    assert value["temp_evaporator_value"] is None and value["temp_evaporator_text"] == '{"a":1}'  # flagged unparseable when cleaned
    assert not report.schema_mismatch_files


@pytest.mark.integration
def test_limits_refuse_a_file_whole_with_one_record_naming_the_limit(spark, tmp_path):
    write_readings(tmp_path, DAY, "rows.parquet", readings("dev-1", DAY, range(20)))
    (day_folder(tmp_path, DAY) / "long.csv").write_text(HEADER + "\n" + "dev-1,2026-01-05T00:00:00Z," + "1" * 500 + ",2,3,4,5,6,7\n")
    rows, report = _staged(spark, tmp_path, FileLimits(max_rows=10, max_line_chars=100))
    assert "max_rows" in report.over_limit_files[str(day_folder(tmp_path, DAY) / "rows.parquet")]
    assert [r["file_error"] for r in rows["rows.parquet"]] == [Reason.FILE_OVER_LIMIT]
    (long_row,) = rows["long.csv"]  # a value over the line limit: that row only
    assert long_row["file_error"] == Reason.FILE_OVER_LIMIT and "max_line_chars" in long_row["error_detail"]


def _csv_row(device_id: str, minute: int, first: float, columns=LANDING_COLUMNS) -> str:
    values = {"device_id": device_id, "ts": f"2026-01-05T00:{minute:02d}:00Z"} | {s: str(first + i) for i, s in enumerate(SENSOR_NAMES)}
    return ",".join(values[c] for c in columns)


@pytest.mark.integration
@pytest.mark.parametrize("spelling", ["local", "file_uri"])
def test_every_file_is_read_as_itself_whatever_its_name(spark, tmp_path, spelling):
    folder = day_folder(tmp_path, DAY)
    # Names that are glob patterns: of their neighbours (`gw{a,b}` matches gwa and gwb), or of nothing.
    parquet = ["gw{a,b}.parquet", "gwa.parquet", "gwb.parquet", "gw ?.parquet", "gw[1].parquet", "gw1.parquet"]
    for i, name in enumerate(parquet):
        write_readings(tmp_path, DAY, name, readings(f"dev-p{i}", DAY, range(i + 1), temp_evaporator=float(i)))
    # `gw*.csv` read as a pattern would also read gwA.csv under its own header: gwA.csv's columns come in another order.
    reordered = tuple(reversed(LANDING_COLUMNS))
    (folder / "gw*.csv").write_text(HEADER + "\n" + _csv_row("dev-star", 0, -10.0) + "\n")
    (folder / "gwA.csv").write_text(",".join(reordered) + "\n" + _csv_row("dev-A", 1, -20.0, reordered) + "\n")
    (folder / "grüße 100%.csv").write_text(HEADER + "\n" + _csv_row("dev-umlaut", 2, -30.0) + "\n")
    (folder / "pct%41 +plus#.csv").write_text(HEADER + "\n" + _csv_row("dev-pct", 3, -40.0) + "\n")
    (folder / "gw\\back.jsonl").write_text(json.dumps({"device_id": "dev-back", "ts": "2026-01-05T00:04:00Z"}) + "\n")
    (folder / "gw{1}.jsonl").write_text(json.dumps({"device_id": "dev-brace", "ts": "2026-01-05T00:05:00Z"}) + "\n")
    # Hadoop's local filesystem cannot open a name holding ':' (its checksum file's name is not a valid path).
    (folder / "a:b.csv").write_text(HEADER + "\n" + _csv_row("dev-colon", 6, -50.0) + "\n")

    root = _root(tmp_path) if spelling == "local" else f"file://{_root(tmp_path)}"
    fs = HadoopFileSystem(spark)
    files = landing.list_landing_files(fs, root, DAY)
    assert len(files) == len(parquet) + 7
    staged = landing.read_landing(spark, fs, {DAY.isoformat(): files}, policy=QUICK)
    rows: dict[str, list[dict]] = {}
    for r in staged.with_paths(staged.rows).collect():
        rows.setdefault(r["source_file"].rsplit("/", 1)[-1], []).append(r.asDict())
    assert set(rows) == {f.name for f in files}
    for i, name in enumerate(parquet):
        assert sorted(r["device_id"] for r in rows[name]) == [f"dev-p{i}"] * (i + 1), name
        assert {r["temp_evaporator_value"] for r in rows[name]} == {float(i)}
    for name, device, first in [("gw*.csv", "dev-star", -10.0), ("gwA.csv", "dev-A", -20.0), ("grüße 100%.csv", "dev-umlaut", -30.0)]:
        (row,) = rows[name]
        assert (row["device_id"], row["file_error"]) == (device, None), name
        assert [row[f"{s}_value"] for s in SENSOR_NAMES] == [first + i for i in range(len(SENSOR_NAMES))], name
    assert [r["device_id"] for r in rows["pct%41 +plus#.csv"]] == ["dev-pct"]
    assert [r["device_id"] for r in rows["gw\\back.jsonl"]] == ["dev-back"]
    assert [r["device_id"] for r in rows["gw{1}.jsonl"]] == ["dev-brace"]
    (colon,) = rows["a:b.csv"]
    assert colon["file_error"] == Reason.UNREADABLE_FILE and "cannot be opened by its name" in colon["error_detail"]
    assert staged.report.refused_files == {f.path for f in files if f.name == "a:b.csv"}


@pytest.mark.integration
def test_a_file_stamped_in_the_future_is_ingested_at_the_run_start_not_at_its_stamp(spark, tmp_path):
    """A gateway clock a day ahead would make its file win every later "latest ingested wins"
    contest, against the resend meant to correct it."""
    ahead = write_readings(tmp_path, DAY, "ahead.parquet", readings("dev-1", DAY, range(2)))
    on_time = write_readings(tmp_path, DAY, "on-time.parquet", readings("dev-2", DAY, range(2)))
    now = datetime.now(UTC)
    tomorrow = (now + timedelta(days=1)).timestamp()
    os.utime(ahead, (tomorrow, tomorrow))
    started = now + timedelta(seconds=1)
    fs = HadoopFileSystem(spark)
    files = landing.list_landing_files(fs, _root(tmp_path), DAY)
    staged = landing.read_landing(spark, fs, {DAY.isoformat(): files}, started=started)
    ingested = {os.path.basename(r["source_file"]): r["ingested_at"] for r in staged.with_paths(staged.rows).collect()}
    assert ingested["ahead.parquet"] == started.replace(tzinfo=None)
    # Stamped before the run started: its own time (Hadoop lists it to the millisecond).
    stamp = datetime.fromtimestamp(os.stat(on_time).st_mtime, UTC).replace(tzinfo=None)
    assert abs(ingested["on-time.parquet"] - stamp) < timedelta(milliseconds=1)
