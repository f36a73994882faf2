"""Verdicts that can change are judged again.

Two quarantine reasons depend on something other than the row: `unknown_device` on the registry
(a device installed before its registry row arrived) and `future_timestamp` on the clock (a reading
stamped ahead of the run that judged it). Every clean run judges its days' rows still quarantined
for these again, from their raw payload, with the run's registry and clock, exactly as a fresh read
would judge them:

    quarantine (reason can change, not re-admitted) ──► payload parsed as the landing reader types it
        ──► judged again (`cleaning.judged`)
              ├── kept now     ──► de-duplicated, MERGEd into clean readings (latest ingested wins)
              │                      └── quarantine row marked `readmitted_at`, `readmission` = added | duplicate
              ├── another reason now (a future reading found outside its day) ──► the row's reason replaced
              └── same verdict ──► left as it is

The quarantine row is kept as evidence and marked, not deleted. A day's books (`DayBooks`) count it
out of the quarantine and into clean readings (`added`: a new key) or into duplicates dropped
(`duplicate`: its key was held already, the later ingested reading kept): the ledger's rows stay as
they were written, and raw = clean + quarantined + duplicates still holds with the marks.

The MERGE goes through the clean table's change feed like any other, so the features recompute the
windows the re-admitted readings fall in. Both writes are named by a batch (the rows they re-admit):
a run killed between them is finished by the next, which finds the MERGE committed and does not
apply it twice.

Who runs it: each clean run, for its own days. When the registry learns devices, `device_registry`
names the days whose quarantine holds their readings (`days_to_rejudge`) and the landing sensor
requests a clean run for each; a day whose future readings come due is named by its clean run
(`rejudge_due_at`) and requested again once that time has passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fs_assets.ingest import cleaning, incremental
from fs_assets.ingest.accounting import DayBooks
from fs_assets.timestamps import instant
from fs_domain.contract import FUTURE_TOLERANCE, LANDING_COLUMNS, SENSOR_NAMES, Reason
from fs_domain.tables import CLEAN_TABLE, QUARANTINE_TABLE
from fs_resources.delta import DeltaTables, DeltaWrite, replace_where_predicate

ADDED = "added"  # the re-admitted reading was a new key of its day
DUPLICATE = "duplicate"  # its key was held already (or re-admitted twice): one reading kept, this one counted as a duplicate
# The quarantine's columns added with re-admission: NULL in rows written before (nothing re-admitted, no column known missing).
READMISSION_SCHEMA = T.StructType(
    [
        T.StructField("missing_sensors", T.ArrayType(T.StringType())),
        T.StructField("readmitted_at", T.TimestampType()),
        T.StructField("readmission", T.StringType()),
    ]
)

DAYS_TO_REJUDGE_KEY = "days_to_rejudge"
REJUDGE_DUE_KEY = "rejudge_due_at"

_PAYLOAD = T.StructType([T.StructField(c, T.StringType()) for c in LANDING_COLUMNS])
_MATCH = "t.landing_date = s.landing_date AND t.source_file = s.source_file AND t.source_row = s.source_row AND t.reason = s.old_reason"


@dataclass
class Rejudged:
    """What judging the quarantine's changeable verdicts again did to a run's days."""

    readmitted_by_reason: dict[str, int] = field(default_factory=dict)
    reclassified: dict[str, int] = field(default_factory=dict)  # "future_timestamp -> outside_partition": rows
    added_by_day: dict[str, int] = field(default_factory=dict)
    duplicates_by_day: dict[str, int] = field(default_factory=dict)
    due_at: datetime | None = None  # when the earliest future reading still quarantined can be judged again
    clean_write: DeltaWrite | None = None

    def metadata(self) -> dict[str, dg.MetadataValue]:
        return {
            "readmitted_by_reason": dg.MetadataValue.json(self.readmitted_by_reason),
            "readmitted_rows_added": sum(self.added_by_day.values()),
            "readmitted_rows_duplicate": sum(self.duplicates_by_day.values()),
            "rejudged_to_another_reason": dg.MetadataValue.json(self.reclassified),
            REJUDGE_DUE_KEY: dg.MetadataValue.text(self.due_at.isoformat() if self.due_at else "none"),
        }


def prepare_quarantine(delta: DeltaTables) -> None:
    """Give a quarantine table written before re-admission existed its columns."""
    if delta.exists(QUARANTINE_TABLE):
        delta.add_columns(QUARANTINE_TABLE, READMISSION_SCHEMA)


def _pending(delta: DeltaTables, days: list[str]) -> DataFrame:
    """The days' quarantine rows whose verdict can change and that were not re-admitted yet."""
    return delta.read(QUARANTINE_TABLE).where(
        F.col("landing_date").isin(days) & F.col("reason").isin(*Reason.CAN_CHANGE) & F.col("readmitted_at").isNull()
    )


def _staged(pending: DataFrame) -> DataFrame:
    """The pending rows as the landing reader stages them (`landing.STAGED_SCHEMA`), from their payload.

    The payload holds each value as the file spelled it (text formats) or as Spark prints the typed
    value (Parquet), which parses back to the same value: parsed as text, both judge as they did."""
    p = F.from_json("raw_payload", _PAYLOAD)
    return pending.select(
        p["device_id"].alias("device_id"),
        p["ts"].try_cast("timestamp").alias("ts_value"),
        p["ts"].alias("ts_text"),
        *[p[s].try_cast("double").alias(f"{s}_value") for s in SENSOR_NAMES],
        *[p[s].alias(f"{s}_text") for s in SENSOR_NAMES],
        F.coalesce("missing_sensors", F.array().cast("array<string>")).alias("missing_sensors"),
        "source_file",
        "source_row",
        F.col("source_row").alias("row_order"),
        F.lit(False).alias("text_format"),
        F.lit(None).cast("string").alias("file_error"),
        F.lit(None).cast("string").alias("error_detail"),
        "raw_payload",
        F.col("landing_date").cast("string").alias("landing_date"),
        "ingested_at",
        F.col("reason").alias("old_reason"),
    )


def days_with_readmittable_devices(delta: DeltaTables, registry: DataFrame) -> list[str]:
    """Days whose quarantine holds readings of unknown devices the registry now knows (within retention:
    what the quarantine still holds)."""
    if not delta.exists(QUARANTINE_TABLE) or "readmitted_at" not in delta.read(QUARANTINE_TABLE).columns:
        return []
    unknown = delta.read(QUARANTINE_TABLE).where((F.col("reason") == Reason.UNKNOWN_DEVICE) & F.col("readmitted_at").isNull())
    devices = unknown.select("landing_date", F.from_json("raw_payload", _PAYLOAD)["device_id"].alias("device_id"))
    known = devices.join(F.broadcast(registry.select("device_id").distinct()), on="device_id", how="left_semi")
    return sorted(r["landing_date"].isoformat() for r in known.select("landing_date").distinct().collect())


def rejudge(delta: DeltaTables, days: list[str], registry: DataFrame, now: datetime, run_id: str, inputs: dict[str, int]) -> Rejudged:
    """Judge the days' changeable quarantine verdicts again; re-admit what can be kept now (see the module)."""
    result = Rejudged()
    if not days or not delta.exists(QUARANTINE_TABLE) or not delta.exists(CLEAN_TABLE):
        return result
    staged = _staged(_pending(delta, days))
    paths = dict(enumerate(sorted(r["source_file"] for r in staged.select("source_file").distinct().collect())))
    if not paths:
        return result
    files = delta.session.createDataFrame(list(paths.items()), "file_id int, source_file string")
    staged = staged.join(F.broadcast(files), on="source_file").drop("source_file")
    old = staged.select("file_id", "source_row", "old_reason")
    judged = cleaning.judged(staged, registry, now).join(old, on=["file_id", "source_row"]).persist(StorageLevel.MEMORY_AND_DISK)
    cached: list = [judged]
    try:
        _apply(delta, judged, files, now, run_id, inputs, result, cached)
    finally:
        for frame in cached:
            frame.unpersist() if isinstance(frame, DataFrame) else frame.release()
    return result


def _apply(delta, judged: DataFrame, files: DataFrame, now: datetime, run_id: str, inputs: dict[str, int], result: Rejudged, cached: list):
    def with_paths(rows: DataFrame) -> DataFrame:
        return rows.join(F.broadcast(files), on="file_id", how="left").drop("file_id")

    # As UTC text: Python would take a collected timestamp in the driver's local zone.
    first = F.date_format(F.min("ts"), "yyyy-MM-dd'T'HH:mm:ss.SSSSSS")
    still_future = judged.where(F.col("reason") == Reason.FUTURE_TIMESTAMP).agg(first.alias("first")).first()["first"]
    if still_future is not None:
        result.due_at = datetime.fromisoformat(still_future).replace(tzinfo=UTC) - FUTURE_TOLERANCE
    changed = judged.where(F.col("reason").isNull() | (F.col("reason") != F.col("old_reason")))
    counted = (
        changed.groupBy("old_reason", "reason")
        .agg(F.count("*").alias("n"), F.expr("bit_xor(xxhash64(file_id, source_row, old_reason))").alias("digest"))
        .collect()
    )
    if not counted:
        return
    digest = 0
    for r in counted:
        digest ^= int(r["digest"]) & 0xFFFFFFFFFFFFFFFF
        if r["reason"] is None:
            result.readmitted_by_reason[r["old_reason"]] = r["n"]
        else:
            result.reclassified[f"{r['old_reason']} -> {r['reason']}"] = r["n"]
    # Named by the rows it changes: a run killed between the two writes is finished by the next.
    batch = f"rejudge-{sum(r['n'] for r in counted)}-{digest:016x}"
    days = [r["landing_date"] for r in judged.select("landing_date").distinct().collect()]
    outcomes = _readmit(delta, judged, with_paths, days, batch, run_id, inputs, result, cached)

    marks = with_paths(
        changed.select("file_id", "source_row", "old_reason", F.col("reason").alias("new_reason"), F.col("detail").alias("new_detail"))
    ).join(outcomes, on=["source_file", "source_row"], how="left")
    quarantined = delta.read(QUARANTINE_TABLE).where(F.col("landing_date").isin(days))
    kept_now = F.col("new_reason").isNull()
    source = (
        quarantined.join(marks, on=["source_file", "source_row"])
        .where(F.col("reason") == F.col("old_reason"))
        .withColumn("reason", F.coalesce("new_reason", "reason"))
        .withColumn("detail", F.when(kept_now, F.col("detail")).otherwise(F.col("new_detail")))
        .withColumn("readmitted_at", F.when(kept_now, instant(now)))
        .withColumn("readmission", F.when(kept_now, F.col("outcome")))
        .select(*cleaning.QUARANTINE_COLUMNS, "old_reason")
    )
    tag = f"{batch}-quarantine"
    if delta.batch_commit(QUARANTINE_TABLE, tag) is None:
        # The day's partitions named on the target: Delta reads only them.
        match = f"{replace_where_predicate({'t.landing_date': days})} AND {_MATCH}"
        delta.merge(source, QUARANTINE_TABLE, match, run_id=run_id, batch=tag)


def _readmit(delta, judged: DataFrame, with_paths, days: list[str], batch: str, run_id: str, inputs, result: Rejudged, cached: list):
    """MERGE the rows that can be kept now into clean readings: (source_file, source_row, outcome) of each."""
    deduplicated = cleaning.deduplicate(cleaning.kept_readings(judged), with_paths)
    cached.append(deduplicated)
    tag = f"{batch}-clean"
    done = delta.batch_commit(CLEAN_TABLE, tag)
    # Sorted against the table as it was before this batch, pinned: a resumed batch counts what it did
    # then, and the outcomes read after the MERGE below are those it was computed with.
    version = done.version - 1 if done else delta.version(CLEAN_TABLE)
    rows = deduplicated.rows.select(*cleaning.CLEAN_COLUMNS, "landing_date", "row_order")
    outcome = incremental.against_held(rows, delta.read(CLEAN_TABLE, version=version), days)
    cached.append(outcome)
    if done:
        result.clean_write = done
    elif outcome.ts_range is not None:
        result.clean_write = incremental.merge_into_clean(delta, outcome, days, run_id, inputs, tag)
    for day, n in outcome.inserted_by_day.items():
        result.added_by_day[day] = result.added_by_day.get(day, 0) + n
    for counts in (outcome.replaced_by_day, outcome.lost_by_day):
        for day, n in counts.items():
            result.duplicates_by_day[day] = result.duplicates_by_day.get(day, 0) + n
    # Re-admitted rows that lost to another re-admitted row of the same key.
    lost = with_paths(deduplicated.contested.where(~F.col("_keep")).select("file_id", "row_order", "landing_date"))
    for r in lost.groupBy("landing_date").count().collect():
        result.duplicates_by_day[r["landing_date"]] = result.duplicates_by_day.get(r["landing_date"], 0) + r["count"]
    statuses = lost.select("source_file", "row_order", F.lit(DUPLICATE).alias("outcome"))
    if outcome.cached is not None:
        statuses = statuses.unionByName(
            outcome.cached.select(
                "source_file", "row_order", F.when(F.col("_status") == "new", ADDED).otherwise(DUPLICATE).alias("outcome")
            )
        )
    return statuses.withColumnRenamed("row_order", "source_row")


def count_quarantine(delta: DeltaTables, books: dict[str, DayBooks]) -> None:
    """Fill each day's quarantine side of its books: rows still quarantined, and the re-admitted ones by outcome."""
    if not delta.exists(QUARANTINE_TABLE):
        return
    table = delta.read(QUARANTINE_TABLE)
    readmission = F.col("readmission") if "readmission" in table.columns else F.lit(None).cast("string")
    counts = table.where(F.col("landing_date").isin(list(books))).groupBy("landing_date", readmission.alias("readmission")).count()
    for r in counts.collect():
        b = books[r["landing_date"].isoformat()]
        if r["readmission"] is None:
            b.quarantined_in_table += r["count"]
        elif r["readmission"] == ADDED:
            b.readmitted_added += r["count"]
        else:
            b.readmitted_duplicates += r["count"]
