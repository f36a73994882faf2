"""Every kind of bad landing input ends as quarantine rows or flagged NULLs, never a lost row."""
# Schema drift: an extra column is ignored (and named), a missing sensor column gives flagged NULLs,
# a missing key column quarantines the file's rows.

import json
import math
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fs_domain.contract import LANDING_COLUMNS, SENSOR_NAMES, Reason
from tests.conftest import SIM_START
from tests.ingest_runs import checks, clean_rows, materialize_clean, materialize_registry, metadata, quarantine_rows
from tests.landing_files import day_folder, readings, registry, write_readings

DAY = SIM_START.isoformat()
HEADER = ",".join(LANDING_COLUMNS)


@pytest.fixture
def bad_day(data_root):
    registry(data_root, ["dev-a", "dev-b"])
    folder = day_folder(data_root, SIM_START)
    write_readings(data_root, SIM_START, "good.parquet", readings("dev-a", SIM_START, range(0, 10)))
    (folder / "corrupt.parquet").write_bytes(b"PAR1\x00\x01garbage")
    (folder / "empty.csv").write_text("")
    (folder / "notes.txt").write_text("not a landing format")
    (folder / "missing-column.csv").write_text("device_id,ts,temp_evaporator\ndev-a,2026-01-05T01:01:00Z,1\n")
    (folder / "missing-key.csv").write_text("device_id,temp_evaporator\ndev-a,1\ndev-a,2\n")
    (folder / "extra-column.csv").write_text(HEADER + ",humidity\ndev-a,2026-01-05T01:00:00Z,-20,40,70,8,15,2,2,55\n")
    (folder / "values.csv").write_text(
        HEADER + "\n"
        "dev-b,2026-01-05T02:00:00Z,not-a-number,40,70,8,15,2,2\n"  # text in a numeric column
        "dev-b,2026-01-05T02:01:00Z,NaN,inf,-Infinity,8,15,2,2\n"  # non-finite
        "dev-b,2026-01-05T02:02:00Z,-20,40,70,8,9999,2,-1\n"  # out of range
        "dev-b,2026-01-05 03:00:00,-20,40,70,8,15,2,2\n"  # naive: taken as UTC
        "dev-b,2026-01-05T05:00:00+02:00,-20,40,70,8,15,2,2\n"  # tz-aware: 03:00 UTC, a duplicate of the row above
        "dev-b,yesterday at noon,-20,40,70,8,15,2,2\n"  # unparseable timestamp
        "dev-b,2999-01-01T00:00:00Z,-20,40,70,8,15,2,2\n"  # far future
        "dev-b,2026-01-04T23:59:00Z,-20,40,70,8,15,2,2\n"  # belongs to another day
        "dev-zzz,2026-01-05T02:00:00Z,-20,40,70,8,15,2,2\n"  # unknown device
        "bad id!,2026-01-05T02:00:00Z,-20,40,70,8,15,2,2\n"  # malformed id
        "dev-b,2026-01-05T04:00:00Z,1,2,3\n"  # too few fields
    )
    row = dict(zip(LANDING_COLUMNS, ["dev-b", "2026-01-05T06:00:00Z", -20, 40, 70, 8, 15, 2, 2]))
    (folder / "events.jsonl").write_text(json.dumps(row) + "\n{broken json\n")
    typed_text = pa.table(
        {c: pa.array(["dev-a"] if c == "device_id" else ["2026-01-05T07:00:00Z"] if c == "ts" else ["12.5"]) for c in LANDING_COLUMNS}
    )
    pq.write_table(typed_text, folder / "strings.parquet")
    return folder


@pytest.mark.integration
def test_bad_inputs_are_quarantined_or_flagged_and_the_books_balance(spark, resources, instance, bad_day):
    materialize_registry(resources, instance)
    result = materialize_clean(resources, instance, DAY)
    assert result.success
    assert checks(result)["check_accounting_identity"].passed
    md = metadata(result)
    assert md["raw_rows"] == 10 + 1 + 1 + 2 + 1 + 11 + 2 + 1
    assert md["raw_rows"] == md["clean_rows_added"] + md["quarantined_rows"] + md["duplicates_dropped"]
    assert md["empty_files"] == [str(bad_day / "empty.csv")]
    assert list(md["unreadable_files"]) == [str(bad_day / "corrupt.parquet")]
    assert md["ignored_files"] == [str(bad_day / "notes.txt")]

    quarantine = {(r["source_file"].rsplit("/", 1)[-1], r["reason"]): r for r in quarantine_rows(spark, DAY).collect()}
    reasons = sorted(quarantine)
    assert reasons == sorted(
        [
            ("corrupt.parquet", Reason.UNREADABLE_FILE),
            ("missing-key.csv", Reason.SCHEMA_MISMATCH),
            ("values.csv", Reason.UNPARSEABLE_TIMESTAMP),
            ("values.csv", Reason.FUTURE_TIMESTAMP),
            ("values.csv", Reason.OUTSIDE_PARTITION),
            ("values.csv", Reason.UNKNOWN_DEVICE),
            ("values.csv", Reason.MALFORMED_DEVICE_ID),
            ("values.csv", Reason.SCHEMA_MISMATCH),
            ("events.jsonl", Reason.SCHEMA_MISMATCH),
        ]
    )
    # the error names the file, and the raw payload keeps the row as it arrived
    assert str(bad_day / "corrupt.parquet") in quarantine[("corrupt.parquet", Reason.UNREADABLE_FILE)]["raw_payload"]
    assert "missing key columns ['ts']" in quarantine[("missing-key.csv", Reason.SCHEMA_MISMATCH)]["detail"]
    assert md["extra_columns"] == {str(bad_day / "extra-column.csv"): ["humidity"]}
    assert md["missing_sensor_columns"] == {str(bad_day / "missing-column.csv"): [s for s in SENSOR_NAMES if s != "temp_evaporator"]}
    assert not checks(result)["check_landing_schema_drift"].passed
    assert "yesterday at noon" in quarantine[("values.csv", Reason.UNPARSEABLE_TIMESTAMP)]["raw_payload"]
    assert "dev-zzz" in quarantine[("values.csv", Reason.UNKNOWN_DEVICE)]["raw_payload"]

    rows = {(r["device_id"], r["ts"].replace(tzinfo=timezone.utc)): r for r in clean_rows(spark, DAY).collect()}
    at = lambda h, m: datetime(2026, 1, 5, h, m, tzinfo=timezone.utc)  # noqa: E731
    text = rows[("dev-b", at(2, 0))]
    assert text["temp_evaporator"] is None and "temp_evaporator:unparseable" in text["quality_flags"]
    nonfinite = rows[("dev-b", at(2, 1))]
    assert [nonfinite[s] for s in ("temp_evaporator", "temp_condenser", "temp_discharge")] == [None, None, None]
    assert {"temp_evaporator:non_finite", "temp_condenser:non_finite", "temp_discharge:non_finite"} <= set(nonfinite["quality_flags"]), (
        nonfinite["quality_flags"]
    )
    out = rows[("dev-b", at(2, 2))]
    assert out["pressure_high"] is None and out["vibration_compressor"] is None and out["current_compressor"] == 8.0
    assert sorted(out["quality_flags"]) == ["pressure_high:out_of_range", "vibration_compressor:out_of_range"]
    # naive 03:00 and +02:00 05:00 are the same instant: one kept, one dropped as an exact duplicate
    assert ("dev-b", at(3, 0)) in rows and md["duplicates_dropped"] == 1
    assert rows[("dev-a", at(7, 0))]["temp_condenser"] == 12.5
    assert ("dev-b", at(6, 0)) in rows
    drifted = rows[("dev-a", at(1, 1))]
    assert drifted["temp_evaporator"] == 1.0 and drifted["pressure_low"] is None
    assert "pressure_low:missing_column" in drifted["quality_flags"] and len(drifted["quality_flags"]) == len(SENSOR_NAMES) - 1
    assert rows[("dev-a", at(1, 0))]["vibration_compressor"] == 2.0  # the extra column's file, read as usual
    assert rows and all(not math.isnan(r[s]) for r in rows.values() for s in SENSOR_NAMES if r[s] is not None)
