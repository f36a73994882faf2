"""Reading the landing zone with Spark: list a day's files, read them typed on the executors.

    list (Spark's filesystem layer) ──► per-file gate: size, rows, header, footer ──► one record per refused file
                                              └──► Spark reads Parquet / CSV / JSON lines by group of same schema
                                                      └──► one staged frame: typed values + the text they came from

Nothing passes through the driver but file names, Parquet footers and CSV header lines. Each staged
row keeps what the cleaning step needs to judge it (`fs_assets.ingest.cleaning`): the parsed value
and, for text formats, the text it was parsed from, so an unparseable value is flagged rather than
lost. Schema drift is handled per file: extra columns are ignored and reported, a missing sensor
column gives NULLs flagged `{sensor}:missing_column`, and only a missing key column (`device_id`,
`ts`) quarantines the file's rows. A file that cannot be read at all, or breaks a `FileLimits`
limit, becomes one staged row carrying the reason, so it is counted and quarantined by name.

A file is read as itself whatever its name: Spark takes a path as a Hadoop glob pattern, so a name
holding `[ ] { } * ?` would read other files or none; every path handed to Spark has those
characters escaped (`literal_path`). What a failed read means, and when it is retried rather than
judged, is `fs_assets.ingest.read_failures`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TypeVar

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fs_assets.ingest.read_failures import ReadPolicy, Refusal, read_or_refuse
from fs_domain.contract import KEY_COLUMNS, LANDING_COLUMNS, LANDING_FORMATS, SENSOR_NAMES, FileLimits, Reason
from fs_resources.filesystem import FileStatus, FileSystem
from fs_resources.spark import jvm_class

PARTITION_PREFIX = "date="
CORRUPT = "_corrupt_record"

LandingFile = FileStatus
R = TypeVar("R")

# One row per raw row read (or per file refused whole), the input of the cleaning step.
STAGED_SCHEMA = T.StructType(
    [
        T.StructField("device_id", T.StringType()),
        T.StructField("ts_value", T.TimestampType()),
        T.StructField("ts_text", T.StringType()),  # the text a timestamp was parsed from (text formats)
        *[T.StructField(f"{s}_value", T.DoubleType()) for s in SENSOR_NAMES],
        *[T.StructField(f"{s}_text", T.StringType()) for s in SENSOR_NAMES],
        T.StructField("missing_sensors", T.ArrayType(T.StringType())),
        T.StructField("source_uri", T.StringType()),
        T.StructField("source_row", T.LongType()),  # row index in the file; text formats get it at quarantine
        T.StructField("row_order", T.LongType()),  # increases with the row's position in its file
        T.StructField("text_format", T.BooleanType()),
        T.StructField("file_error", T.StringType()),
        T.StructField("error_detail", T.StringType()),
        T.StructField("raw_payload", T.StringType()),
    ]
)
FILES_SCHEMA = T.StructType(
    [
        T.StructField("source_uri", T.StringType()),
        T.StructField("file_id", T.IntegerType()),
        T.StructField("landing_date", T.StringType()),
        T.StructField("ingested_at", T.TimestampType()),
    ]
)


@dataclass
class StagingReport:
    """What reading saw, file by file (row counts come from the cleaning step's accounting)."""

    files: int = 0
    unreadable_files: dict[str, str] = field(default_factory=dict)
    over_limit_files: dict[str, str] = field(default_factory=dict)
    schema_mismatch_files: dict[str, str] = field(default_factory=dict)
    extra_columns: dict[str, list[str]] = field(default_factory=dict)
    missing_columns: dict[str, list[str]] = field(default_factory=dict)
    empty_files: list[str] = field(default_factory=list)
    vanished_files: list[str] = field(default_factory=list)  # listed, gone before they could be read: not recorded
    footer_rows: dict[str, int] = field(default_factory=dict)  # Parquet files: rows their footer promises

    @property
    def refused_files(self) -> set[str]:
        """Files refused whole, each standing as one quarantine record instead of its rows."""
        return set(self.unreadable_files) | set(self.over_limit_files)


@dataclass
class Staged:
    """The staged rows name their file by `file_id`, its rank among the listed paths (so ordering by
    it orders by path), not by the path's text: the cleaning step caches every row it judges, and
    the path repeated on each was the widest column it held. `files` puts the path back on the rows
    that are written."""

    rows: DataFrame  # STAGED_SCHEMA - source_uri + file_id, landing_date, ingested_at
    files: DataFrame  # file_id, source_file (the path as listed)
    paths: dict[int, str]  # the same, for counts collected by file_id
    report: StagingReport

    def with_paths(self, rows: DataFrame) -> DataFrame:
        """`rows` with `source_file`, the listed path of their file, in place of `file_id`."""
        return rows.join(F.broadcast(self.files), on="file_id", how="left").drop("file_id")


def partition_folder(landing_root: str, day: date | str) -> str:
    return f"{landing_root}/{PARTITION_PREFIX}{day if isinstance(day, str) else day.isoformat()}"


# Hadoop's glob syntax (`GlobPattern`); Spark globs any path holding one of these.
_GLOB_CHARACTERS = frozenset("\\{}[]*?")


def literal_path(uri: str) -> str:
    """`uri` as a glob pattern matching only itself, for Spark's readers (which glob every path they are given)."""
    return "".join("\\" + c if c in _GLOB_CHARACTERS else c for c in uri)


def _landing_format(f: FileStatus) -> str | None:
    suffix = "." + f.name.rsplit(".", 1)[-1].lower() if "." in f.name else ""
    return suffix if suffix in LANDING_FORMATS else None


def list_landing_files(fs: FileSystem, landing_root: str, day: date | str) -> list[FileStatus]:
    """The day's landing files in a stable order; in-flight (dot-prefixed) files and links are not listed."""
    return [
        f
        for f in fs.list(partition_folder(landing_root, day))
        if not f.is_dir and not f.is_symlink and not f.name.startswith(".") and _landing_format(f)
    ]


def ignored_files(fs: FileSystem, landing_root: str, day: date | str) -> list[str]:
    """Entries of the day's folder that are not read: other formats and symbolic links (reported, never silent)."""
    return sorted(
        f.path
        for f in fs.list(partition_folder(landing_root, day))
        if not f.name.startswith(".") and (f.is_symlink or (not f.is_dir and not _landing_format(f)))
    )


def landing_partition_keys(fs: FileSystem, landing_root: str) -> list[str]:
    keys = []
    for folder in fs.list(landing_root):
        if not folder.is_dir or folder.is_symlink or not folder.name.startswith(PARTITION_PREFIX):
            continue
        key = folder.name[len(PARTITION_PREFIX) :]
        try:
            date.fromisoformat(key)
        except ValueError:
            continue
        keys.append(key)
    return sorted(keys)


def fingerprint(files: Iterable[FileStatus]) -> str:
    """Changes whenever a file is added, removed, rewritten or touched."""
    digest = hashlib.sha1()
    for f in files:
        digest.update(f"{f.name}\0{f.size}\0{f.mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# Per-file gate: what the driver learns from a listing entry, a Parquet footer or a CSV header.


def _file_record(f: FileStatus, source_uri: str, reason: str, detail: str) -> tuple:
    """A staged row standing for a whole file that is not read."""
    row = {c.name: None for c in STAGED_SCHEMA}
    payload = json.dumps({"file": f.path, "error": detail})
    row.update(
        source_uri=source_uri, source_row=0, row_order=0, text_format=False, file_error=reason, error_detail=detail, raw_payload=payload
    )
    return tuple(row[c.name] for c in STAGED_SCHEMA)


def _parquet_footer(session: SparkSession, f: FileStatus) -> tuple[int, str]:
    """(row count, schema) from the file's footer, read through Hadoop: no row is read."""
    jvm = session._jvm
    path = jvm.org.apache.hadoop.fs.Path(f.uri)
    source = jvm.org.apache.parquet.hadoop.util.HadoopInputFile.fromPath(path, session._jsc.hadoopConfiguration())
    reader = jvm.org.apache.parquet.hadoop.ParquetFileReader.open(source)
    try:
        schema = reader.getFooter().getFileMetaData().getSchema()
        return int(reader.getRecordCount()), "|".join(str(schema.getType(i)) for i in range(schema.getFieldCount()))
    finally:
        reader.close()


def _csv_header(fs: FileSystem, f: FileStatus, limits: FileLimits) -> list[str] | str:
    """The header's column names, or why the file cannot be read by its header."""
    line = fs.first_line(f.uri, limits.max_line_chars + 2)
    if not line.endswith(b"\n") and len(line) < f.size:
        return f"the header line is longer than {limits.max_line_chars:,} characters (limit: max_line_chars)"
    text = line.decode("utf-8-sig", errors="replace").strip("\r\n")
    return [h.strip() for h in next(csv.reader(io.StringIO(text)), [])]


def _column_problem(names: list[str]) -> str | None:
    """Only a missing or repeated key column, or a repeated name, makes a file's columns unusable."""
    missing = [c for c in KEY_COLUMNS if c not in names]
    duplicated = sorted({c for c in names if names.count(c) > 1})
    problems = []
    if missing:
        problems.append(f"missing key columns {missing}")
    if duplicated:
        problems.append(f"duplicated columns {duplicated}")
    return "; ".join(problems) or None


# ----------------------------------------------------------------------------------------------
# Normalising one group of files (same format, same columns) to the staged schema.


def _text_to_timestamp(text: Column) -> Column:
    # ISO-8601 with or without an offset; without one the time is taken as UTC (the session zone).
    return text.try_cast("timestamp")


def _normalised(frame: DataFrame, text_format: bool, row_order: Column, source_row: Column, max_chars: int) -> DataFrame:
    fields = {f.name: f.dataType for f in frame.schema.fields}
    scalar = (T.StringType, T.NumericType, T.BooleanType, T.TimestampType, T.TimestampNTZType, T.DateType)
    columns: list[Column] = []

    def as_text(name: str) -> Column:
        kind = fields[name]
        if isinstance(kind, T.StringType):
            return F.col(name)
        return F.col(name).cast("string") if isinstance(kind, scalar) else F.to_json(F.col(name))

    columns.append(as_text("device_id").alias("device_id"))
    ts_type = fields["ts"]
    if isinstance(ts_type, (T.TimestampType, T.TimestampNTZType, T.DateType)):
        columns += [F.col("ts").cast("timestamp").alias("ts_value"), F.lit(None).cast("string").alias("ts_text")]
    else:
        columns += [_text_to_timestamp(as_text("ts")).alias("ts_value"), as_text("ts").alias("ts_text")]
    missing = [s for s in SENSOR_NAMES if s not in fields]
    for s in SENSOR_NAMES:
        kind = fields.get(s)
        if kind is None:
            value, text = F.lit(None).cast("double"), F.lit(None).cast("string")
        elif isinstance(kind, (T.NumericType, T.BooleanType)) and not isinstance(kind, T.StringType):
            value, text = F.col(s).cast("double"), F.lit(None).cast("string")
        else:
            text = as_text(s)
            value = text.try_cast("double")
        columns += [value.alias(f"{s}_value"), text.alias(f"{s}_text")]
    corrupt = F.col(CORRUPT) if CORRUPT in fields else F.lit(None).cast("string")
    bad_row = (
        F.when(corrupt.isNotNull(), F.lit(Reason.SCHEMA_MISMATCH)).when(
            F.greatest(*[F.coalesce(F.length(as_text(c)), F.lit(0)) for c in LANDING_COLUMNS if c in fields]) > F.lit(max_chars),
            F.lit(Reason.FILE_OVER_LIMIT),
        )
        if text_format
        else F.lit(None).cast("string")
    )
    detail = (
        F.when(
            corrupt.isNotNull(), F.lit("the row does not parse with the file's columns (wrong number of fields, or not a JSON object)")
        ).when(bad_row == Reason.FILE_OVER_LIMIT, F.lit(f"a value is longer than {max_chars:,} characters (limit: max_line_chars)"))
        if text_format
        else F.lit(None).cast("string")
    )
    columns += [
        F.array(*[F.lit(s) for s in missing]).cast("array<string>").alias("missing_sensors"),
        F.col("_metadata.file_path").alias("source_uri"),
        source_row.alias("source_row"),
        row_order.alias("row_order"),
        F.lit(text_format).alias("text_format"),
        bad_row.alias("file_error"),
        detail.alias("error_detail"),
        (F.substring(corrupt, 1, max_chars) if text_format else F.lit(None).cast("string")).alias("raw_payload"),
    ]
    return frame.select(*columns)


def _whole_rows_as_schema_mismatch(frame: DataFrame, detail: str, text_format: bool, row_order: Column, source_row: Column) -> DataFrame:
    """Every row of a file whose columns cannot be used, kept whole as its JSON payload."""
    names = [c for c in frame.columns if c != CORRUPT]
    payload = F.to_json(F.struct(*[F.col(f"`{c}`") for c in names]))
    if CORRUPT in frame.columns:
        payload = F.coalesce(F.col(CORRUPT), payload)
    nulls = {c.name: F.lit(None).cast(c.dataType) for c in STAGED_SCHEMA}
    nulls.update(
        source_uri=F.col("_metadata.file_path"),
        source_row=source_row,
        row_order=row_order,
        text_format=F.lit(text_format),
        file_error=F.lit(Reason.SCHEMA_MISMATCH),
        error_detail=F.lit(detail),
        raw_payload=payload,
        missing_sensors=F.array().cast("array<string>"),
    )
    return frame.select(*[nulls[c.name].alias(c.name) for c in STAGED_SCHEMA])


def _as_read(session: SparkSession, uri: str) -> str:
    """A listed file's URI as Spark spells it in `_metadata.file_path`: URL-encoded (`Path.toUri`),
    where the listing is not ('+' is a literal plus there). Spelling the few listed files Spark's
    way, rather than decoding every row's path, keeps the join to the listing off the rows' cost."""
    return str(jvm_class(session._jvm, "org.apache.hadoop.fs.Path")(uri).toUri().toString())


def _text_order() -> tuple[Column, Column]:
    # Within one task the ids follow the file's rows; a file's splits keep their order across tasks.
    return F.monotonically_increasing_id(), F.lit(None).cast("long")


def read_landing(
    session: SparkSession,
    fs: FileSystem,
    files_by_day: dict[str, list[FileStatus]],
    limits: FileLimits | None = None,
    *,
    refused: dict[str, Refusal] | None = None,
    policy: ReadPolicy | None = None,
    log: Callable[[str], None] = lambda _: None,
    started: datetime | None = None,
) -> Staged:
    """Every listed file as staged rows; never raises for a bad file, it becomes a staged record.

    Each row's `ingested_at` is its file's modification time, but never later than `started` (the
    run's start; unset, now): a file stamped ahead by a wrong clock would otherwise win every later
    "latest ingested wins" contest, against the very resend meant to correct it.

    `refused` holds files already refused (by path) while Spark read them: they are not read again.
    A footer or header read that fails is retried by `policy` while the failure may pass, and raises
    `read_failures.ReadStillFailing` once the attempts are spent."""
    limits = limits or FileLimits()
    policy = policy or ReadPolicy()
    refused = refused or {}
    started = started or datetime.now(UTC)
    report = StagingReport()
    records: list[tuple] = []
    parquet: dict[str, list[FileStatus]] = {}
    csvs: dict[tuple[str, ...], list[FileStatus]] = {}
    whole_mismatch: list[tuple[FileStatus, list[str], str]] = []
    jsonl: list[FileStatus] = []
    footer_rows: dict[str, int] = {}
    listed: list[tuple[str, FileStatus]] = [(day, f) for day, files in sorted(files_by_day.items()) for f in files]

    def refuse(f: FileStatus, reason: str, detail: str) -> None:
        records.append(_file_record(f, _as_read(session, f.uri), reason, detail))
        (report.over_limit_files if reason == Reason.FILE_OVER_LIMIT else report.unreadable_files)[f.path] = detail

    def gate(f: FileStatus, read: Callable[[], R]) -> R | None:
        """`read()` of one file's own bytes (footer, header line), or None when the file is refused instead."""
        outcome = read_or_refuse(fs, f, read, policy, log) if f.path not in refused else refused[f.path]
        if not isinstance(outcome, Refusal):
            return outcome
        if outcome.reason is None:
            report.vanished_files.append(f.path)
        else:
            refuse(f, outcome.reason, outcome.detail)
        return None

    for _, f in listed:
        report.files += 1
        kind = _landing_format(f)
        if f.size > limits.max_bytes:
            refuse(f, Reason.FILE_OVER_LIMIT, f"the file is {f.size:,} bytes, over {limits.max_bytes:,} (limit: max_bytes)")
            continue
        if f.size == 0:
            if kind == ".parquet":
                refuse(f, Reason.UNREADABLE_FILE, "empty file (0 bytes)")
            else:
                report.empty_files.append(f.path)
            continue
        if kind == ".parquet":
            if (footer := gate(f, lambda f=f: _parquet_footer(session, f))) is None:
                continue
            rows, signature = footer
            footer_rows[f.uri] = rows
            if rows > limits.max_rows:
                refuse(f, Reason.FILE_OVER_LIMIT, f"the file holds {rows:,} rows, over {limits.max_rows:,} (limit: max_rows)")
            elif rows == 0:
                report.empty_files.append(f.path)
            else:
                parquet.setdefault(signature, []).append(f)
        elif kind == ".csv":
            if (header := gate(f, lambda f=f: _csv_header(fs, f, limits))) is None:
                continue
            if isinstance(header, str):
                refuse(f, Reason.FILE_OVER_LIMIT, header)
            elif not header or header == [""]:
                report.empty_files.append(f.path)
            elif problem := _column_problem(header):
                whole_mismatch.append((f, header, problem))
            else:
                csvs.setdefault(tuple(header), []).append(f)
        # JSON lines have no header: opening the file is its gate (a name Hadoop cannot open fails here, by name).
        elif gate(f, lambda f=f: fs.first_line(f.uri, 1)) is not None:
            jsonl.append(f)

    frames: list[DataFrame] = []
    for files in parquet.values():
        # No `ignoreCorruptFiles`: it would end a file's read early on any I/O error, without a word.
        frame = session.read.parquet(*[literal_path(f.uri) for f in files])
        report.footer_rows.update({f.path: footer_rows[f.uri] for f in files})
        names = frame.columns
        order = F.col("_metadata.row_index")
        if problem := _column_problem(names):
            for f in files:
                whole_mismatch.append((f, names, problem))
            continue
        frames.append(_normalised(frame, False, order, order, limits.max_line_chars))
        _note_drift(report, files, names)
    for header, files in csvs.items():
        frame = _read_csv(session, [f.uri for f in files], list(header))
        frames.append(_normalised(frame, True, *_text_order(), limits.max_line_chars))
        _note_drift(report, files, list(header))
    if jsonl:
        frame = _read_jsonl(session, [f.uri for f in jsonl])
        frames.append(_normalised(frame, True, *_text_order(), limits.max_line_chars))
    for f, names, problem in whole_mismatch:
        report.schema_mismatch_files[f.path] = problem
        if _landing_format(f) == ".parquet":
            frame = session.read.parquet(literal_path(f.uri))
            order = F.col("_metadata.row_index")
            frames.append(_whole_rows_as_schema_mismatch(frame, problem, False, order, order))
        else:
            unique = [n if names.index(n) == i else f"{n}_{i}" for i, n in enumerate(names)]
            frame = _read_csv(session, [f.uri], unique)
            frames.append(_whole_rows_as_schema_mismatch(frame, problem, True, *_text_order()))
    if records:
        frames.append(session.createDataFrame(records, STAGED_SCHEMA))

    staged = session.createDataFrame([], STAGED_SCHEMA)
    for frame in frames:
        staged = staged.unionByName(frame)
    paths = dict(enumerate(sorted(f.path for _, f in listed)))
    ids = {path: i for i, path in paths.items()}
    files = session.createDataFrame(
        [(_as_read(session, f.uri), ids[f.path], day, min(f.ingested_at, started).replace(tzinfo=None)) for day, f in listed],
        FILES_SCHEMA,
    )
    # The URI was only the key to find each row's file; rows carry its id from here on.
    return Staged(
        staged.join(F.broadcast(files), on="source_uri", how="left").drop("source_uri"),
        session.createDataFrame(list(paths.items()), "file_id int, source_file string"),
        paths,
        report,
    )


def read_alone(session: SparkSession, f: FileStatus) -> None:
    """Read one file whole, every value decoded, keeping nothing: whether its bytes can be read at all."""
    kind, path = _landing_format(f), literal_path(f.uri)
    if kind == ".parquet":
        frame = session.read.parquet(path)
    elif kind == ".csv":
        frame = session.read.csv(path, header=True, encoding="UTF-8")
    else:
        frame = _read_jsonl(session, [f.uri])
    frame.write.format("noop").mode("overwrite").save()


def _read_jsonl(session: SparkSession, uris: list[str]) -> DataFrame:
    schema = T.StructType([T.StructField(c, T.StringType()) for c in LANDING_COLUMNS] + [T.StructField(CORRUPT, T.StringType())])
    return session.read.schema(schema).options(mode="PERMISSIVE", columnNameOfCorruptRecord=CORRUPT).json([literal_path(u) for u in uris])


def _read_csv(session: SparkSession, uris: list[str], header: list[str]) -> DataFrame:
    schema = T.StructType([T.StructField(h, T.StringType()) for h in header] + [T.StructField(CORRUPT, T.StringType())])
    return session.read.schema(schema).csv(
        [literal_path(u) for u in uris],
        header=True,
        enforceSchema=True,
        mode="PERMISSIVE",
        columnNameOfCorruptRecord=CORRUPT,
        # Only an empty field is NULL: "NaN", "NA" or "null" are values the cleaning step must see and flag.
        nullValue="",
        emptyValue="",
        encoding="UTF-8",
    )


def _note_drift(report: StagingReport, files: list[FileStatus], names: list[str]) -> None:
    extra = [n for n in names if n not in LANDING_COLUMNS and n != CORRUPT]
    missing = [s for s in SENSOR_NAMES if s not in names]
    for f in files:
        if extra:
            report.extra_columns[f.path] = extra
        if missing:
            report.missing_columns[f.path] = missing
