"""Staging landing files as raw text: every format, and every way a file can be bad."""

import json
import os
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fs_assets.ingest import landing
from fs_domain.contract import LANDING_COLUMNS, SENSOR_NAMES, Reason
from tests.landing_files import day_folder, readings, write_readings

pytestmark = pytest.mark.unit

DAY = date(2026, 1, 5)


def _read(path):
    stat = path.stat()
    return landing.read_landing_file(landing.LandingFile(str(path), stat.st_size, stat.st_mtime_ns))


def test_parquet_floats_and_timestamps_become_exact_text(tmp_path):
    frame = readings("dev-1", DAY, range(3), temp_evaporator=0.1 + 0.2)
    table = _read(write_readings(tmp_path, DAY, "a.parquet", frame))
    assert table.num_rows == 3
    assert float(table.column("temp_evaporator")[0].as_py()) == 0.1 + 0.2
    assert table.column("ts")[1].as_py() == "2026-01-05T00:01:00.000000Z"
    assert table.column("file_error").null_count == 3


def test_tz_aware_parquet_is_converted_to_utc_and_naive_is_kept(tmp_path):
    folder = day_folder(tmp_path, DAY)
    aware = pa.table(
        {"device_id": ["d"], "ts": pa.array([1767610800000000], pa.timestamp("us", tz="Europe/Moscow"))} | {s: [1.0] for s in SENSOR_NAMES}
    )
    pq.write_table(aware, folder / "aware.parquet")
    naive = aware.set_column(1, "ts", pa.array([1767610800000000], pa.timestamp("us")))
    pq.write_table(naive, folder / "naive.parquet")
    assert _read(folder / "aware.parquet").column("ts")[0].as_py() == "2026-01-05T11:00:00.000000Z"
    assert _read(folder / "naive.parquet").column("ts")[0].as_py() == "2026-01-05T11:00:00.000000"


def test_csv_and_jsonl_rows_are_read_as_text(tmp_path):
    folder = day_folder(tmp_path, DAY)
    header = "device_id,ts,temp_evaporator,temp_condenser,temp_discharge,current_compressor,pressure_high,pressure_low,vibration_compressor"
    (folder / "a.csv").write_text(
        header + "\ndev-1,2026-01-05T00:00:00Z,-20,40,70,8,15,2,abc\ndev-1,2026-01-05T00:01:00Z,,40,70,8,15,2,2\n"
    )
    table = _read(folder / "a.csv")
    assert table.column("vibration_compressor").to_pylist() == ["abc", "2"]
    assert table.column("temp_evaporator").to_pylist() == ["-20", None]
    row = {
        "device_id": "dev-1",
        "ts": "2026-01-05T00:00:00+01:00",
        "temp_evaporator": float("nan"),
        "temp_condenser": 40,
        "temp_discharge": 70.5,
        "current_compressor": None,
        "pressure_high": "15",
        "pressure_low": 2,
        "vibration_compressor": 2,
    }
    (folder / "b.jsonl").write_text(json.dumps(row) + "\n\nnot json\n[1, 2]\n")
    table = _read(folder / "b.jsonl")
    assert table.num_rows == 3
    good = table.filter(pa.compute.is_null(table.column("file_error")))
    assert good.column("temp_evaporator").to_pylist() == ["nan"]
    assert good.column("current_compressor").to_pylist() == [None]
    assert table.column("file_error").to_pylist().count(Reason.SCHEMA_MISMATCH) == 2


def test_csv_with_missing_or_extra_columns_keeps_every_row_as_payload(tmp_path):
    folder = day_folder(tmp_path, DAY)
    (folder / "missing.csv").write_text("device_id,ts,temp_evaporator\ndev-1,2026-01-05T00:00:00Z,1\ndev-2,2026-01-05T00:00:00Z,2\n")
    table = _read(folder / "missing.csv")
    assert table.num_rows == 2
    assert set(table.column("file_error").to_pylist()) == {Reason.SCHEMA_MISMATCH}
    assert "missing columns" in table.column("error_detail")[0].as_py()
    assert json.loads(table.column("raw_payload")[1].as_py())["device_id"] == "dev-2"


def test_ragged_csv_rows_are_kept_as_schema_mismatch(tmp_path):
    folder = day_folder(tmp_path, DAY)
    header = "device_id,ts,temp_evaporator,temp_condenser,temp_discharge,current_compressor,pressure_high,pressure_low,vibration_compressor"
    (folder / "r.csv").write_text(header + "\ndev-1,2026-01-05T00:00:00Z,1,2,3,4,5,6,7\ndev-1,2026-01-05T00:01:00Z,1,2,3,4,5,6,7,8\n")
    table = _read(folder / "r.csv")
    assert table.num_rows == 2
    assert table.column("file_error").to_pylist() == [None, Reason.SCHEMA_MISMATCH]


def test_corrupt_empty_and_vanished_files_become_one_error_row_naming_the_file(tmp_path):
    folder = day_folder(tmp_path, DAY)
    (folder / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet")
    (folder / "zero.parquet").write_bytes(b"")
    (folder / "empty.csv").write_text("")
    files = landing.list_landing_files(str(tmp_path / "landing"), DAY)
    (folder / "gone.parquet").write_bytes(b"x")
    gone = landing.LandingFile(str(folder / "gone.parquet"), 1, 0)
    os.remove(folder / "gone.parquet")
    report = landing.stage_files({DAY.isoformat(): files + [gone]}, tmp_path / "staging")
    assert set(report.unreadable_files) == {str(folder / "corrupt.parquet"), str(folder / "zero.parquet"), gone.path}
    assert "vanished" in report.unreadable_files[gone.path]
    assert report.empty_files == [str(folder / "empty.csv")]
    assert report.raw_rows == 3
    staged = pq.read_table(tmp_path / "staging")
    assert staged.num_rows == 3
    assert all(gone.path in p or "corrupt" in p or "zero" in p for p in staged.column("raw_payload").to_pylist())


def test_in_flight_files_are_not_listed_and_fingerprint_moves_on_change(tmp_path):
    folder = day_folder(tmp_path, DAY)
    write_readings(tmp_path, DAY, "a.parquet", readings("dev-1", DAY, range(2)))
    (folder / ".b.parquet.tmp").write_bytes(b"partial")
    files = landing.list_landing_files(str(tmp_path / "landing"), DAY)
    assert [f.name for f in files] == ["a.parquet"]
    before = landing.fingerprint(files)
    write_readings(tmp_path, DAY, "late.parquet", readings("dev-1", DAY, range(5, 6)))
    assert landing.fingerprint(landing.list_landing_files(str(tmp_path / "landing"), DAY)) != before


def test_bom_latin1_and_unreadable_column_types_keep_every_row(tmp_path):
    folder = day_folder(tmp_path, DAY)
    header = "device_id,ts,temp_evaporator,temp_condenser,temp_discharge,current_compressor,pressure_high,pressure_low,vibration_compressor"
    (folder / "bom.csv").write_bytes(("\ufeff" + header + "\ndev-1,2026-01-05T00:00:00Z,1,2,3,4,5,6,7\n").encode("utf-8"))
    assert _read(folder / "bom.csv").column("file_error").to_pylist() == [None]
    (folder / "latin1.csv").write_bytes(
        (header + "\ndév-1,2026-01-05T00:00:00Z,1,2,3,4,5,6,7\ndev-2,2026-01-05T00:00:00Z,1,2,3,4,5,6,7\n").encode("latin-1")
    )
    table = _read(folder / "latin1.csv")
    assert table.num_rows == 2 and table.column("device_id")[1].as_py() == "dev-2"
    nested = pa.table({c: pa.array([{"a": 1}]) if c == "temp_evaporator" else pa.array(["x"]) for c in LANDING_COLUMNS})
    pq.write_table(nested, folder / "nested.parquet")
    table = _read(folder / "nested.parquet")
    assert table.num_rows == 1 and table.column("file_error")[0].as_py() == Reason.SCHEMA_MISMATCH


def test_files_of_other_formats_are_reported_not_read(tmp_path):
    folder = day_folder(tmp_path, DAY)
    (folder / "readings.json").write_text("{}")
    (folder / "readings.csv.gz").write_bytes(b"\x1f\x8b")
    assert landing.ignored_files(str(tmp_path / "landing"), DAY) == [str(folder / "readings.csv.gz"), str(folder / "readings.json")]
    assert landing.list_landing_files(str(tmp_path / "landing"), DAY) == []
