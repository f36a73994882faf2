"""Checks on clean readings that re-read the written Delta partitions: key uniqueness, physical
ranges, null fractions.

The accounting identity is evaluated inside the `clean_sensor_readings` step (it needs the raw row
count the step saw; `fs_assets.ingest.accounting`) and is blocking: a partition whose books do not
balance stops everything downstream.
"""

from datetime import UTC, datetime

import dagster as dg
from pyspark.sql import functions as F

from fs_assets.metadata import table_metadata
from fs_assets.partitions import daily_partitions
from fs_checks.results import check_result
from fs_domain.contract import QUARANTINE_SHARE, SENSOR_NAMES, SENSORS
from fs_domain.tables import CLEAN_TABLE, LEDGER_TABLE, QUARANTINE_TABLE
from fs_domain.verdicts import Verdict, guide_section
from fs_resources.delta import DeltaTables

CLEAN_ASSET = dg.AssetKey("clean_sensor_readings")

CHECK_KEY_UNIQUE = "check_clean_key_unique"
CHECK_PHYSICAL_RANGES = "check_physical_ranges"
CHECK_NULL_FRACTION = "check_sensor_null_fraction"
CHECK_QUARANTINE_SHARE = "check_quarantine_share"

# A sensor missing in more than this share of the readings judged (a run's merged rows, or a
# rebuilt day) is a data-quality warning (dropouts run at about 1 %; a dead sensor or an unmapped
# channel shows as 100 %).
NULL_FRACTION_WARN = 0.05

GUIDE = guide_section("Clean readings: duplicate keys, ranges and NULLs")
WHAT_TO_DO_KEYS = f"Duplicate clean readings: after the fix, rebuild the day (`rebuild: true`); {GUIDE}"
WHAT_TO_DO_RANGES = f"Out-of-range values kept by cleaning: after the fix, rebuild the day (`rebuild: true`); {GUIDE}"
WHAT_TO_DO_NULLS = f"A sensor mostly missing: a dead sensor or a dropped column, tell the producer; {GUIDE}"
WHAT_TO_DO_SHARE = (
    "Many of the day's rows are quarantined for one reason: read `shares`, then that reason's quarantine rows; "
    f"{guide_section('Clean readings: quarantine share')}"
)


def _written_partitions(context: dg.AssetCheckExecutionContext, delta: DeltaTables):
    days = list(context.partition_keys)
    return delta.read(CLEAN_TABLE).where(F.col("reading_date").isin(days)), days


@dg.asset_check(
    asset=CLEAN_ASSET,
    name=CHECK_KEY_UNIQUE,
    partitions_def=daily_partitions,
    blocking=True,
    description="Exactly one clean reading per (device_id, ts). After an incremental run, the keys that run merged are "
    "checked against their day (a new duplicate must involve one of them); otherwise the days whole.",
)
def check_clean_key_unique(context: dg.AssetCheckExecutionContext, delta: DeltaTables) -> dg.AssetCheckResult:
    rows, days = _written_partitions(context, delta)
    merged, scope = _merged_rows(context, delta, days)
    if merged is not None:
        merged = merged.select("device_id", "ts").distinct()
        bounds = merged.agg(F.min("ts").alias("lo"), F.max("ts").alias("hi")).first()
        # The ts range lets Delta skip the day's files that hold none of the merged keys.
        rows = rows.where(F.col("ts").between(bounds["lo"], bounds["hi"])).join(merged, on=["device_id", "ts"], how="left_semi")
    n_dupes, sample = _duplicate_keys(rows)
    return check_result(
        Verdict(n_dupes, 0, "==", "duplicated keys", WHAT_TO_DO_KEYS),
        context=context,
        metadata={
            "duplicate_keys": n_dupes,
            "partitions": ", ".join(days),
            "scope": scope,
            "sample": dg.MetadataValue.text("; ".join(sample) or "none"),
        },
    )


def _duplicate_keys(rows) -> tuple[int, list[str]]:
    """How many (device_id, ts) keys `rows` hold more than once, and up to five of them.

    The keys are first counted by a 64-bit hash: a long groups several times faster than a string
    and a timestamp, and a day's 144 M keys are almost all unique. Only when a hash repeats (a
    duplicate, or a collision) are the rows grouped by the key itself, so a collision is never
    reported and a passing day costs one pass."""
    hashed = rows.select(F.xxhash64("device_id", "ts").alias("key_hash"))
    if hashed.groupBy("key_hash").count().where("count > 1").limit(1).count() == 0:
        return 0, []
    dupes = rows.groupBy("device_id", "ts").count().where("count > 1").persist()
    n_dupes = dupes.count()
    sample = [f"{r['device_id']} @ {r['ts']:%Y-%m-%dT%H:%M:%S} x{r['count']}" for r in dupes.limit(5).collect()]
    dupes.unpersist()
    return n_dupes, sample


def _merged_rows(context: dg.AssetCheckExecutionContext, delta: DeltaTables, days: list[str]):
    """The rows this run merged into `days`, when all it did to the table was merge; else None (check the days whole).

    The days held only valid rows with unique keys after the previous run's checks, so a new fault
    lies in a row this run wrote: checking those costs what the run added, not the day."""
    record = context.instance.get_run_record_by_id(context.run.run_id)
    started = record.start_time if record is not None else None
    commits = delta.run_commits(CLEAN_TABLE, context.run.run_id, since=datetime.fromtimestamp(started, UTC) if started else None)
    if not commits:
        return None, "whole partitions (this run wrote no clean readings)"
    if any(op != "MERGE" for _, op in commits):
        return None, "whole partitions (this run replaced them)"
    written = delta.changes(CLEAN_TABLE, commits[0][0], commits[-1][0], kinds=("insert", "update_postimage"))
    return written.where(F.col("reading_date").isin(days)), f"rows merged by this run (Delta versions {commits[0][0]}-{commits[-1][0]})"


@dg.asset_check(
    asset=CLEAN_ASSET,
    name=CHECK_PHYSICAL_RANGES,
    partitions_def=daily_partitions,
    description="Every non-NULL sensor value lies inside its physical range (fs_domain/contract.py): after an incremental run, "
    "the rows that run merged (the day held only valid rows before it); otherwise the days whole.",
)
def check_physical_ranges(context: dg.AssetCheckExecutionContext, delta: DeltaTables) -> dg.AssetCheckResult:
    rows, days = _written_partitions(context, delta)
    merged, scope = _merged_rows(context, delta, days)
    rows = rows if merged is None else merged
    outside = (
        rows.agg(*[F.sum(F.when(~F.col(s.name).between(s.low, s.high) | F.isnan(s.name), 1).otherwise(0)).alias(s.name) for s in SENSORS])
        .first()
        .asDict()
    )
    outside = {k: int(v or 0) for k, v in outside.items()}
    return check_result(
        Verdict(sum(outside.values()), 0, "==", "values outside their physical range", WHAT_TO_DO_RANGES),
        context=context,
        metadata={f"outside_range_{k}": v for k, v in outside.items()} | {"partitions": ", ".join(days), "scope": scope},
    )


@dg.asset_check(
    asset=CLEAN_ASSET,
    name=CHECK_NULL_FRACTION,
    partitions_def=daily_partitions,
    description=f"Share of NULL values per sensor; warns above {NULL_FRACTION_WARN:.0%}. After an incremental run, over the rows "
    "that run merged (a file of dead sensors shows undiluted by the day, and the check's cost follows the run, not the hour); "
    "otherwise over the days whole.",
)
def check_sensor_null_fraction(context: dg.AssetCheckExecutionContext, delta: DeltaTables) -> dg.AssetCheckResult:
    rows, days = _written_partitions(context, delta)
    merged, scope = _merged_rows(context, delta, days)
    rows = rows if merged is None else merged
    stats = rows.agg(F.count(F.lit(1)).alias("n"), *[F.sum(F.col(n).isNull().cast("long")).alias(n) for n in SENSOR_NAMES]).first()
    total = stats["n"] or 0
    fractions = {n: (stats[n] or 0) / total if total else 0.0 for n in SENSOR_NAMES}
    high = sorted(n for n, f in fractions.items() if f > NULL_FRACTION_WARN)
    return check_result(
        Verdict(max(fractions.values()), NULL_FRACTION_WARN, "<=", "share of readings NULL for one sensor", WHAT_TO_DO_NULLS),
        context=context,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"NULL share above {NULL_FRACTION_WARN:.0%} for {', '.join(high)}" if high else None,
        metadata={f"null_fraction_{n}": dg.MetadataValue.float(round(f, 6)) for n, f in fractions.items()}
        | {"readings": total, "partitions": ", ".join(days), "scope": scope},
    )


@dg.asset_check(
    asset=CLEAN_ASSET,
    name=CHECK_QUARANTINE_SHARE,
    partitions_def=daily_partitions,
    description=f"Share of each day's landing rows still quarantined, per reason: warns above {QUARANTINE_SHARE.warn:.0%}, "
    f"pages above {QUARANTINE_SHARE.error:.0%} (fs_domain/contract.py). A day with fewer than {QUARANTINE_SHARE.min_rows:,} "
    "landing rows is not judged; rows re-admitted since they were quarantined do not count.",
)
def check_quarantine_share(context: dg.AssetCheckExecutionContext, delta: DeltaTables) -> dg.AssetCheckResult:
    days = list(context.partition_keys)
    raw: dict[str, int] = {}
    if delta.exists(LEDGER_TABLE):
        sums = delta.read(LEDGER_TABLE).where(F.col("landing_date").isin(days)).groupBy("landing_date").agg(F.sum("raw_rows").alias("raw"))
        raw = {r["landing_date"].isoformat(): int(r["raw"] or 0) for r in sums.collect()}
    rows = []
    if delta.exists(QUARANTINE_TABLE):
        held = delta.read(QUARANTINE_TABLE).where(F.col("landing_date").isin(days))
        if "readmitted_at" in held.columns:
            held = held.where(F.col("readmitted_at").isNull())
        for r in held.groupBy("landing_date", "reason").count().collect():
            day = r["landing_date"].isoformat()
            judged = raw.get(day, 0) >= QUARANTINE_SHARE.min_rows
            share = r["count"] / raw[day] if judged else 0.0
            rows.append(
                {"day": day, "reason": r["reason"], "rows": r["count"], "landing_rows": raw.get(day, 0), "share": share, "judged": judged}
            )
    rows.sort(key=lambda r: -r["share"])
    worst = rows[0] if rows and rows[0]["judged"] else None
    observed = round(worst["share"], 6) if worst else 0.0
    paging = observed > QUARANTINE_SHARE.error
    threshold = QUARANTINE_SHARE.error if paging else QUARANTINE_SHARE.warn
    return check_result(
        Verdict(observed, threshold, "<=", "share of a day's landing rows quarantined for one reason", WHAT_TO_DO_SHARE),
        context=context,
        passed=observed <= QUARANTINE_SHARE.warn,
        severity=dg.AssetCheckSeverity.ERROR if paging else dg.AssetCheckSeverity.WARN,
        description=f"{worst['share']:.2%} of {worst['day']}'s landing rows quarantined as {worst['reason']}" if worst else None,
        metadata={
            "worst_reason": worst["reason"] if worst else "none",
            "shares": table_metadata([r | {"share": round(r["share"], 6)} for r in rows[:50]]),
            "landing_rows": dg.MetadataValue.json(raw),
            "days_not_judged": ", ".join(sorted(d for d in days if raw.get(d, 0) < QUARANTINE_SHARE.min_rows)) or "none",
        },
    )


ingest_checks = [check_clean_key_unique, check_physical_ranges, check_sensor_null_fraction, check_quarantine_share]
