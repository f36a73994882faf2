"""The clean-readings transform, as Spark column expressions over staged rows (`landing.read_landing`).

    staged rows ──► classify ──► quarantine (reason code + raw payload)
                        └──────► parse sensors (NULL + flag when unparseable, non-finite, out of range)
                                   └──► deduplicate on (device_id, ts): latest ingested wins

Every staged row ends in exactly one of: clean, quarantined, dropped as a duplicate. The counts of
each, per landing partition, are returned with the frames so the accounting identity
raw = clean + quarantined + duplicates dropped can be reported and checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from fs_domain.contract import (
    DEVICE_ID_JAVA_REGEX,
    FUTURE_TOLERANCE,
    SENSOR_NAMES,
    SENSORS,
    Reason,
    ValueFlag,
)

CLEAN_COLUMNS: tuple[str, ...] = ("device_id", "ts", *SENSOR_NAMES, "quality_flags", "source_file", "ingested_at", "reading_date")
QUARANTINE_COLUMNS: tuple[str, ...] = (
    "landing_date",
    "source_file",
    "source_row",
    "reason",
    "detail",
    "raw_payload",
    "ingested_at",
    "quarantined_at",
)

_INF = float("inf")


@dataclass
class PartitionAccounting:
    """One landing partition's books: raw rows = clean + quarantined + duplicates dropped."""

    partition: str
    raw_rows: int = 0
    clean_rows: int = 0
    quarantined_rows: int = 0
    duplicates_dropped: int = 0
    exact_duplicates: int = 0
    conflicting_duplicates: int = 0
    conflicting_keys: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    flagged_values: dict[str, int] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        return self.raw_rows == self.clean_rows + self.quarantined_rows + self.duplicates_dropped


def rejection_reason(now: datetime) -> Column:
    """The first contract rule a staged row breaks, or NULL when the row can be kept."""
    ts = F.col("ts_parsed")
    return (
        F.when(F.col("file_error").isNotNull(), F.col("file_error"))
        .when(F.col("device_id").isNull() | ~F.col("device_id").rlike(DEVICE_ID_JAVA_REGEX), F.lit(Reason.MALFORMED_DEVICE_ID))
        .when(ts.isNull(), F.lit(Reason.UNPARSEABLE_TIMESTAMP))
        .when(ts > F.lit(now + FUTURE_TOLERANCE), F.lit(Reason.FUTURE_TIMESTAMP))
        .when(F.to_date(ts) != F.to_date(F.col("landing_date")), F.lit(Reason.OUTSIDE_PARTITION))
        .when(F.col("_registered").isNull(), F.lit(Reason.UNKNOWN_DEVICE))
    )


def rejection_detail() -> Column:
    reason = F.col("reason")
    return (
        F.when(F.col("error_detail").isNotNull(), F.col("error_detail"))
        .when(
            reason == Reason.MALFORMED_DEVICE_ID, F.format_string("device id %s is not a valid id", F.to_json(F.array(F.col("device_id"))))
        )
        .when(
            reason == Reason.UNPARSEABLE_TIMESTAMP,
            F.format_string("timestamp %s is not an ISO-8601 date-time", F.to_json(F.array(F.col("ts_text")))),
        )
        .when(
            reason == Reason.FUTURE_TIMESTAMP,
            F.format_string(
                "timestamp %s is more than %d minutes ahead of ingestion",
                F.col("ts_parsed").cast("string"),
                F.lit(int(FUTURE_TOLERANCE.total_seconds() // 60)),
            ),
        )
        .when(
            reason == Reason.OUTSIDE_PARTITION,
            F.format_string(
                "reading dated %s arrived in the landing folder of %s", F.to_date("ts_parsed").cast("string"), F.col("landing_date")
            ),
        )
        .when(reason == Reason.UNKNOWN_DEVICE, F.format_string("device %s is not in the device registry", F.col("device_id")))
    )


def sensor_flag(name: str, low: float, high: float) -> Column:
    text, value = F.col(f"{name}_text"), F.col(f"{name}_value")
    return (
        F.when(F.array_contains("missing_sensors", name), F.lit(f"{name}:{ValueFlag.MISSING_COLUMN}"))
        .when(text.isNotNull() & value.isNull(), F.lit(f"{name}:{ValueFlag.UNPARSEABLE}"))
        .when(F.isnan(value) | (F.abs(value) == F.lit(_INF)), F.lit(f"{name}:{ValueFlag.NON_FINITE}"))
        .when((value < F.lit(low)) | (value > F.lit(high)), F.lit(f"{name}:{ValueFlag.OUT_OF_RANGE}"))
    )


def classify(staged: DataFrame, registry: DataFrame, now: datetime) -> DataFrame:
    """Staged rows with `ts_parsed` and `reason` (NULL for rows that can be kept)."""
    registered = registry.select("device_id").distinct().withColumn("_registered", F.lit(True))
    return (
        staged.withColumn("ts_parsed", F.col("ts_value"))
        .join(F.broadcast(registered), on="device_id", how="left")
        .withColumn("reason", rejection_reason(now))
    )


def text_row_numbers(classified: DataFrame) -> DataFrame:
    """Where each task's share of a text file starts, so `row_order` becomes the row's index in its file.

    Rows of CSV and JSON-lines files carry `monotonically_increasing_id()`: the task number in the
    upper bits, the row's position within the task below, and a file's splits keep their order
    across tasks. A small aggregation per (file, task) turns that into exact row numbers.
    """
    per_task = (
        classified.where("text_format")
        .groupBy("source_file", F.shiftright("row_order", 33).alias("_task"))
        .agg(F.min("row_order").alias("_first"), F.count("*").alias("_rows"))
    )
    earlier = Window.partitionBy("source_file").orderBy("_first").rowsBetween(Window.unboundedPreceding, -1)
    return per_task.withColumn("_offset", F.coalesce(F.sum("_rows").over(earlier), F.lit(0))).drop("_rows")


def quarantine_rows(classified: DataFrame, now: datetime) -> DataFrame:
    raw_row = F.to_json(
        F.struct(
            F.col("device_id"),
            F.coalesce(F.col("ts_text"), F.col("ts_value").cast("string")).alias("ts"),
            *[F.coalesce(F.col(f"{s}_text"), F.col(f"{s}_value").cast("string")).alias(s) for s in SENSOR_NAMES],
        )
    )
    rows = classified.where(F.col("reason").isNotNull())
    numbers = text_row_numbers(classified)
    return (
        rows.withColumn("_task", F.shiftright("row_order", 33))
        .join(F.broadcast(numbers), on=["source_file", "_task"], how="left")
        .withColumn(
            "source_row",
            F.when(F.col("text_format"), F.col("_offset") + F.col("row_order") - F.col("_first")).otherwise(F.col("source_row")),
        )
        .withColumn("detail", rejection_detail())
        .withColumn("raw_payload", F.coalesce(F.col("raw_payload"), raw_row))
        .withColumn("landing_date", F.to_date("landing_date"))
        .withColumn("quarantined_at", F.lit(now).cast("timestamp"))
        .select(*QUARANTINE_COLUMNS)
    )


def parsed_readings(classified: DataFrame) -> DataFrame:
    """Kept rows with typed sensor values; a bad value becomes NULL and leaves a flag."""
    rows = classified.where(F.col("reason").isNull())
    flags = [sensor_flag(s.name, s.low, s.high) for s in SENSORS]
    rows = rows.withColumn("quality_flags", F.filter(F.array(*flags), lambda x: x.isNotNull()))
    for s, flag in zip(SENSORS, flags):
        rows = rows.withColumn(s.name, F.when(flag.isNull(), F.col(f"{s.name}_value")))
    rows = rows.withColumn("ts", F.col("ts_parsed")).withColumn("reading_date", F.to_date("ts_parsed"))
    # Only what the clean table, the de-duplication and the books need travels on (a narrower cache).
    return rows.select(*CLEAN_COLUMNS, "landing_date", "row_order")


def deduplicated(readings: DataFrame) -> DataFrame:
    """Marks each (device_id, ts) group: `_keep` for the latest ingested row, `_conflict` when values differ."""
    key = Window.partitionBy("device_id", "ts")
    latest_first = key.orderBy(F.col("ingested_at").desc(), F.col("source_file").desc(), F.col("row_order").desc())
    content = F.xxhash64(*[F.col(n) for n in SENSOR_NAMES], F.col("quality_flags"))
    return (
        readings.withColumn("_content", content)
        .withColumn("_keep", F.row_number().over(latest_first) == 1)
        .withColumn("_conflict", F.min("_content").over(key) != F.max("_content").over(key))
    )


def clean_rows(marked: DataFrame) -> DataFrame:
    return marked.where("_keep").select(*CLEAN_COLUMNS)


@dataclass
class FileAccounting:
    raw_rows: int = 0
    quarantined_rows: int = 0
    kept_rows: int = 0  # rows that won their key within the batch


def accounting(
    classified: DataFrame, marked: DataFrame, partitions: list[str]
) -> tuple[dict[str, PartitionAccounting], dict[str, FileAccounting]]:
    """Per landing partition and per file counts, from two small aggregations over the cached frames."""
    books = {p: PartitionAccounting(partition=p) for p in partitions}
    files: dict[str, FileAccounting] = {}
    for row in classified.groupBy("landing_date", "source_file", "reason").count().collect():
        entry = books.setdefault(row["landing_date"], PartitionAccounting(partition=row["landing_date"]))
        per_file = files.setdefault(row["source_file"], FileAccounting())
        entry.raw_rows += row["count"]
        per_file.raw_rows += row["count"]
        if row["reason"] is not None:
            entry.quarantined_rows += row["count"]
            per_file.quarantined_rows += row["count"]
            entry.quarantined_by_reason[row["reason"]] = entry.quarantined_by_reason.get(row["reason"], 0) + row["count"]
    flag_counts = [
        # The lambda becomes a Spark expression at once, inside this iteration: `n` is bound here.
        F.sum(F.when(F.exists("quality_flags", lambda f: f.startswith(f"{n}:")), 1).otherwise(0)).alias(n)  # noqa: B023
        for n in SENSOR_NAMES
    ]
    stats = marked.groupBy("landing_date", "source_file").agg(
        F.sum(F.col("_keep").cast("long")).alias("kept"),
        F.sum((~F.col("_keep") & ~F.col("_conflict")).cast("long")).alias("exact"),
        F.sum((~F.col("_keep") & F.col("_conflict")).cast("long")).alias("conflicting"),
        F.sum((F.col("_keep") & F.col("_conflict")).cast("long")).alias("conflicting_keys"),
        *flag_counts,
    )
    for row in stats.collect():
        entry = books[row["landing_date"]]
        files[row["source_file"]].kept_rows = row["kept"]
        entry.clean_rows += row["kept"]
        entry.exact_duplicates += row["exact"]
        entry.conflicting_duplicates += row["conflicting"]
        entry.duplicates_dropped += row["exact"] + row["conflicting"]
        entry.conflicting_keys += row["conflicting_keys"]
        for n in SENSOR_NAMES:
            if row[n]:
                entry.flagged_values[n] = entry.flagged_values.get(n, 0) + row[n]
    return books, files
