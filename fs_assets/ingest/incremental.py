"""Merging a batch of newly cleaned readings into days that already hold readings.

    batch rows (deduplicated among themselves) ──► joined with the day's rows in the batch's ts range
          ├── no match                     → inserted                    (clean_rows_added)
          ├── match, batch row is newer    → replaces the held row       (the held row: a duplicate dropped)
          └── match, held row is newer     → dropped                     (a duplicate dropped)

"Newer" is the rule of a rebuild: the later `ingested_at` wins, then the later `source_file`. The
join reads only the day's files whose `ts` statistics overlap the batch's range, so the cost of a
batch follows its own rows, not the hour of the day. The same MERGE then writes inserts and
replacements in one Delta commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fs_assets.ingest.cleaning import CLEAN_COLUMNS
from fs_domain.contract import SENSOR_NAMES
from fs_domain.tables import CLEAN_TABLE, LEDGER_TABLE
from fs_resources.delta import DeltaTables, replace_where_predicate


def newer(at: str, file: str, held_at: str, held_file: str) -> str:
    """The rebuild's rule as SQL: a reading is newer when its file landed later, then by file name."""
    return f"({at} > {held_at}) OR ({at} = {held_at} AND {file} > {held_file})"


NEWER = newer("s.ingested_at", "s.source_file", "t.ingested_at", "t.source_file")  # the MERGE's spelling


@dataclass
class MergeOutcome:
    source: DataFrame  # rows to MERGE: new keys and replacements (persisted; unpersist after writing)
    ts_range: tuple[str, str] | None  # first and last ts of the batch, as UTC text
    inserted_by_file: dict[str, int] = field(default_factory=dict)
    inserted_by_day: dict[str, int] = field(default_factory=dict)
    replaced_by_day: dict[str, int] = field(default_factory=dict)
    lost_by_day: dict[str, int] = field(default_factory=dict)
    conflicting_by_day: dict[str, int] = field(default_factory=dict)
    cached: DataFrame | None = None

    def release(self) -> None:
        if self.cached is not None:
            self.cached.unpersist()


def _content(prefix: str = "") -> F.Column:
    return F.xxhash64(*[F.col(f"{prefix}{n}") for n in SENSOR_NAMES], F.col(f"{prefix}quality_flags"))


def against_held(batch: DataFrame, held: DataFrame, days: list[str]) -> MergeOutcome:
    """Sort the batch's kept rows (CLEAN_COLUMNS + landing_date) into inserts, replacements and losers."""
    text = "yyyy-MM-dd HH:mm:ss.SSSSSS"  # in the session's zone, UTC: no driver clock takes part
    bounds = batch.agg(F.date_format(F.min("ts"), text).alias("lo"), F.date_format(F.max("ts"), text).alias("hi")).first()
    if bounds["lo"] is None:
        return MergeOutcome(batch.limit(0), None)
    lo, hi = bounds["lo"], bounds["hi"]
    in_range = F.col("ts").between(F.lit(lo).cast("timestamp"), F.lit(hi).cast("timestamp"))
    target = held.where(F.col("reading_date").isin(days) & in_range).select(
        "device_id",
        "ts",
        F.col("ingested_at").alias("t_ingested_at"),
        F.col("source_file").alias("t_source_file"),
        _content().alias("t_content"),
    )
    is_newer = F.expr(newer("ingested_at", "source_file", "t_ingested_at", "t_source_file"))
    joined = (
        batch.join(target, on=["device_id", "ts"], how="left")
        .withColumn("_status", F.when(F.col("t_ingested_at").isNull(), "new").when(is_newer, "replaces").otherwise("loses"))
        .withColumn("_conflict", F.col("t_content").isNotNull() & (F.col("t_content") != _content()))
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    outcome = MergeOutcome(joined.where(F.col("_status") != "loses").select(*CLEAN_COLUMNS), (lo, hi), cached=joined)
    for r in (
        joined.groupBy("landing_date", "source_file", "_status")
        .agg(F.count("*").alias("n"), F.sum(F.col("_conflict").cast("long")).alias("c"))
        .collect()
    ):
        day = r["landing_date"]
        if r["_status"] == "new":
            outcome.inserted_by_file[r["source_file"]] = outcome.inserted_by_file.get(r["source_file"], 0) + r["n"]
            outcome.inserted_by_day[day] = outcome.inserted_by_day.get(day, 0) + r["n"]
        else:
            counts = outcome.replaced_by_day if r["_status"] == "replaces" else outcome.lost_by_day
            counts[day] = counts.get(day, 0) + r["n"]
            outcome.conflicting_by_day[day] = outcome.conflicting_by_day.get(day, 0) + (r["c"] or 0)
    return outcome


def merge_condition(days: list[str], ts_range: tuple[str, str]) -> str:
    """The MERGE's match: keys equal, with the day's partitions and the batch's ts range stated
    on the target so Delta prunes partitions and skips files by their `ts` statistics."""
    lo, hi = ts_range
    return (
        f"{replace_where_predicate({'t.reading_date': days})} AND t.ts >= TIMESTAMP'{lo}' AND t.ts <= TIMESTAMP'{hi}' "
        "AND t.device_id = s.device_id AND t.ts = s.ts"
    )


MERGE_STEP = "clean-merge"  # the batch step name of a batch's MERGE commit (`{batch}-clean-merge`)


def merge_into_clean(delta: DeltaTables, outcome: MergeOutcome, days: list[str], run_id: str, inputs: dict[str, int], batch: str):
    """MERGE `outcome`'s rows into clean readings (latest ingested wins), the days and time range named
    on the target so Delta reads only them; the write is tagged with `batch`."""
    return delta.merge(
        outcome.source, CLEAN_TABLE, merge_condition(days, outcome.ts_range), NEWER, run_id=run_id, inputs=inputs, batch=batch
    )


def unfinished_merge(delta: DeltaTables) -> int | None:
    """The clean table's version of the first batch MERGE committed after the ledger's last commit, if any.

    A batch records its files in the ledger last: a MERGE after the ledger's last commit belongs to a
    batch cut short before it. Its files are not in the ledger, so the next batch reads them again
    (alone, or beside files landed since): sorted against the table as it was before that MERGE,
    its rows count as new or duplicates as they did then, rather than losing to themselves."""
    ledgered = next(delta.recent_commits(LEDGER_TABLE, 1), None)
    if ledgered is None or not delta.exists(CLEAN_TABLE):
        return None
    after = ledgered.get("timestamp", 0)
    merges = [
        c["version"]
        for c in delta.recent_commits(CLEAN_TABLE)
        if c.get("timestamp", 0) > after and (c["userMetadata"] or "").endswith(f"-{MERGE_STEP}")
    ]
    return min(merges, default=None)
