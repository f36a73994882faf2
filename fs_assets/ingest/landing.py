"""Reading the landing zone: list a day's files and stage them, unreadable ones included, as raw text.

Every landing file, whatever its format (Parquet, CSV, JSON lines), is read one at a time and
staged as a Parquet file of *strings* in a fixed schema, one row per raw row, tagged with its
source file, row number and ingestion time. Nothing is parsed here beyond what the format needs:
parsing, validation and quarantine happen in Spark (`fs_assets.ingest.cleaning`), so a bad value
never stops a file and a bad file never stops a partition. A file that cannot be read at all (a
corrupt footer, a vanished file) is staged as one row that carries the reason and the error.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fs_domain.contract import LANDING_COLUMNS, LANDING_FORMATS, Reason

PARTITION_PREFIX = "date="

STAGED_SCHEMA = pa.schema(
    [(name, pa.string()) for name in LANDING_COLUMNS]
    + [
        ("source_file", pa.string()),
        ("source_row", pa.int64()),
        ("ingested_at", pa.timestamp("us", tz="UTC")),
        ("file_error", pa.string()),
        ("error_detail", pa.string()),
        ("raw_payload", pa.string()),
        ("landing_date", pa.string()),
    ]
)
# Readers fill every column but `landing_date`, which staging adds for the folder the file came from.
_READ_SCHEMA = pa.schema([f for f in STAGED_SCHEMA if f.name != "landing_date"])


@dataclass(frozen=True)
class LandingFile:
    path: str
    size: int
    mtime_ns: int

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def ingested_at(self) -> datetime:
        return datetime.fromtimestamp(self.mtime_ns / 1e9, tz=UTC)


@dataclass
class StagingReport:
    """What staging saw, file by file: the raw row count is the left side of the accounting identity."""

    raw_rows: int = 0
    files: int = 0
    rows_by_file: dict[str, int] = field(default_factory=dict)
    unreadable_files: dict[str, str] = field(default_factory=dict)
    schema_mismatch_files: dict[str, str] = field(default_factory=dict)
    empty_files: list[str] = field(default_factory=list)


def partition_folder(landing_root: str, day: date | str) -> Path:
    return Path(landing_root) / f"{PARTITION_PREFIX}{day if isinstance(day, str) else day.isoformat()}"


def list_landing_files(landing_root: str, day: date | str) -> list[LandingFile]:
    """The day's landing files in a stable order; in-flight files (dot-prefixed) are not listed."""
    folder = partition_folder(landing_root, day)
    if not folder.is_dir():
        return []
    files = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in LANDING_FORMATS or not path.is_file():
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        files.append(LandingFile(str(path), stat.st_size, stat.st_mtime_ns))
    return files


def ignored_files(landing_root: str, day: date | str) -> list[str]:
    """Files in the day's folder that are not in a landing format (reported, never silently skipped)."""
    folder = partition_folder(landing_root, day)
    if not folder.is_dir():
        return []
    return sorted(
        str(p) for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in LANDING_FORMATS
    )


def landing_partition_keys(landing_root: str) -> list[str]:
    root = Path(landing_root)
    if not root.is_dir():
        return []
    keys = []
    for folder in sorted(root.glob(f"{PARTITION_PREFIX}*")):
        key = folder.name[len(PARTITION_PREFIX) :]
        try:
            date.fromisoformat(key)
        except ValueError:
            continue
        keys.append(key)
    return keys


def fingerprint(files: Iterable[LandingFile]) -> str:
    """Changes whenever a file is added, removed, rewritten or touched."""
    digest = hashlib.sha1()
    for f in files:
        digest.update(f"{f.name}\0{f.size}\0{f.mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _as_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Raw text of a typed column; timestamps become ISO-8601 in UTC (naive ones are taken as UTC)."""
    if pa.types.is_timestamp(column.type):
        # %S carries the column's sub-second digits; Spark reads up to microseconds.
        if column.type.tz is not None:
            return pc.strftime(pc.cast(column, pa.timestamp(column.type.unit, tz="UTC")), format="%Y-%m-%dT%H:%M:%SZ")
        return pc.strftime(column, format="%Y-%m-%dT%H:%M:%S")
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return pc.cast(column, pa.string())
    if pa.types.is_dictionary(column.type):
        return pc.cast(pc.cast(column, column.type.value_type), pa.string())
    # Arrow prints floats in their shortest round-trip form, so the text parses back to the same double.
    return pc.cast(column, pa.string())


def _staged(
    f: LandingFile,
    text: dict[str, pa.Array] | None,
    source_rows: list[int],
    reason: str | None = None,
    detail: str | None = None,
    payloads: list[str] | None = None,
) -> pa.Table:
    """Staged rows of one file: landing columns as text (NULL for rows kept only as a payload)."""
    n = len(source_rows)
    columns = {name: (text[name] if text else pa.nulls(n, pa.string())) for name in LANDING_COLUMNS}
    columns.update(
        source_file=pa.array([f.path] * n, pa.string()),
        source_row=pa.array(source_rows, pa.int64()),
        ingested_at=pa.array([f.ingested_at] * n, pa.timestamp("us", tz="UTC")),
        file_error=pa.array([reason] * n, pa.string()),
        error_detail=pa.array([detail] * n, pa.string()),
        raw_payload=pa.array(payloads if payloads is not None else [None] * n, pa.string()),
    )
    return pa.table(columns, schema=_READ_SCHEMA)


def _file_error_table(f: LandingFile, reason: str, detail: str) -> pa.Table:
    """A file that could not be read at all: one row naming it, so it is counted and quarantined."""
    return _staged(f, None, [0], reason, detail, [json.dumps({"file": f.path, "error": detail})])


def _rows_as_payload_table(
    f: LandingFile, rows: list[dict], reason: str, detail: str, first_row: int = 0, numbers: list[int] | None = None
) -> pa.Table:
    """Rows that break the contract, each kept whole as a JSON payload."""
    payloads = [json.dumps(row, default=str, allow_nan=True) for row in rows]
    return _staged(f, None, numbers if numbers is not None else list(range(first_row, first_row + len(rows))), reason, detail, payloads)


def _conforming(f: LandingFile, table: pa.Table) -> pa.Table:
    try:
        text = {name: _as_text(table.column(name)) for name in LANDING_COLUMNS}
    except pa.ArrowException as exc:
        # A column of a type with no text form (a struct, a list...): keep every row, whole.
        types = ", ".join(f"{c}: {table.schema.field(c).type}" for c in LANDING_COLUMNS)
        return _rows_as_payload_table(
            f, table.to_pylist(), Reason.SCHEMA_MISMATCH, f"column types not readable as text ({types}): {exc}"[:2000]
        )
    return _staged(f, {k: v.combine_chunks() for k, v in text.items()}, list(range(table.num_rows)))


def _column_problem(names: list[str]) -> str | None:
    missing = [c for c in LANDING_COLUMNS if c not in names]
    extra = [c for c in names if c not in LANDING_COLUMNS]
    duplicated = sorted({c for c in names if names.count(c) > 1})
    problems = []
    if missing:
        problems.append(f"missing columns {missing}")
    if extra:
        problems.append(f"unexpected columns {extra}")
    if duplicated:
        problems.append(f"duplicated columns {duplicated}")
    return "; ".join(problems) or None


def _read_parquet(f: LandingFile) -> pa.Table:
    table = pq.read_table(f.path)
    problem = _column_problem(table.column_names)
    if problem:
        return _rows_as_payload_table(f, table.to_pylist(), Reason.SCHEMA_MISMATCH, problem)
    return _conforming(f, table)


def _read_csv(f: LandingFile) -> pa.Table:
    with open(f.path, "rb") as handle:
        # A byte-order mark or bytes that are not UTF-8 must not cost the file: decode leniently
        # (U+FFFD marks the bad bytes, which then fail validation row by row).
        data = handle.read().decode("utf-8-sig", errors="replace").encode("utf-8")
    if not data.strip():
        return _READ_SCHEMA.empty_table()
    header = next(csv.reader(io.StringIO(data.decode("utf-8").splitlines()[0])))
    header = [h.strip() for h in header]
    problem = _column_problem(header)
    if problem:
        text = data.decode("utf-8", errors="replace")
        rows = list(csv.reader(io.StringIO(text)))[1:]
        return _rows_as_payload_table(
            f, [dict(zip(header, r)) if len(r) == len(header) else {"_raw": r} for r in rows], Reason.SCHEMA_MISMATCH, problem, first_row=1
        )
    ragged: list[tuple[int, str]] = []

    def keep_ragged(row: pacsv.InvalidRow) -> str:
        ragged.append((row.number or -1, row.text))
        return "skip"

    table = pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=header, skip_rows=1),
        parse_options=pacsv.ParseOptions(invalid_row_handler=keep_ragged),
        # Only an empty field is NULL: "NaN", "NA" or "null" are values the cleaning step must see and flag.
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in header}, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False
        ),
    )
    staged = _conforming(f, table)
    if ragged:
        bad = _rows_as_payload_table(
            f,
            [{"_raw": text} for _, text in ragged],
            Reason.SCHEMA_MISMATCH,
            f"row has a different number of fields than the header ({len(header)})",
            numbers=[n for n, _ in ragged],
        )
        staged = pa.concat_tables([staged, bad])
    return staged


def _read_jsonl(f: LandingFile) -> pa.Table:
    good: dict[str, list] = {c: [] for c in LANDING_COLUMNS}
    good_rows: list[int] = []
    bad: list[tuple[int, dict, str]] = []
    with open(f.path, encoding="utf-8-sig", errors="replace") as handle:
        for number, line in enumerate(handle):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                bad.append((number, {"_raw": line.rstrip("\n")}, f"invalid JSON: {exc.msg}"))
                continue
            if not isinstance(record, dict):
                bad.append((number, {"_raw": line.rstrip("\n")}, "line is not a JSON object"))
                continue
            problem = _column_problem(list(record))
            if problem:
                bad.append((number, record, problem))
                continue
            for c in LANDING_COLUMNS:
                value = record[c]
                if value is None:
                    good[c].append(None)
                elif isinstance(value, float) and not math.isfinite(value):
                    good[c].append(repr(value))
                else:
                    good[c].append(value if isinstance(value, str) else json.dumps(value))
            good_rows.append(number)
    tables = [_staged(f, {c: pa.array(good[c], pa.string()) for c in LANDING_COLUMNS}, good_rows)]
    for number, record, problem in bad:
        table = _rows_as_payload_table(f, [record], Reason.SCHEMA_MISMATCH, problem, first_row=number)
        tables.append(table)
    return pa.concat_tables(tables)


READERS = {".parquet": _read_parquet, ".csv": _read_csv, ".jsonl": _read_jsonl}


def read_landing_file(f: LandingFile) -> pa.Table:
    """One landing file as staged rows; never raises for a bad file, it becomes a staged error row."""
    reader = READERS[Path(f.path).suffix.lower()]
    try:
        return reader(f)
    except FileNotFoundError:
        return _file_error_table(f, Reason.UNREADABLE_FILE, "the file vanished before it could be read")
    except (pa.ArrowException, OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
        if f.size == 0:
            return _file_error_table(f, Reason.UNREADABLE_FILE, "empty file (0 bytes)")
        return _file_error_table(f, Reason.UNREADABLE_FILE, f"{type(exc).__name__}: {exc}"[:2000])


def stage_files(files_by_day: dict[str, list[LandingFile]], staging_dir: Path, report: StagingReport | None = None) -> StagingReport:
    """Stage each file as `staging_dir/NNNNN.parquet`; returns what was seen, file by file."""
    staging_dir.mkdir(parents=True, exist_ok=True)
    report = report or StagingReport()
    numbered = [(day, f) for day, files in sorted(files_by_day.items()) for f in files]
    for i, (day, f) in enumerate(numbered):
        table = read_landing_file(f)
        report.files += 1
        report.raw_rows += table.num_rows
        report.rows_by_file[f.path] = table.num_rows
        errors = pc.unique(table.column("file_error").drop_null()).to_pylist() if table.num_rows else []
        if Reason.UNREADABLE_FILE in errors:
            report.unreadable_files[f.path] = table.column("error_detail")[0].as_py()
        elif Reason.SCHEMA_MISMATCH in errors:
            details = pc.unique(table.column("error_detail").drop_null()).to_pylist()
            report.schema_mismatch_files[f.path] = "; ".join(details)
        if table.num_rows == 0:
            report.empty_files.append(f.path)
            continue
        table = table.append_column("landing_date", pa.array([day] * table.num_rows, pa.string()))
        pq.write_table(table, staging_dir / f"{i:05d}.parquet")
    return report
