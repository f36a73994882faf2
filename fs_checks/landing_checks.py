"""Checks on the landing zone as the ledger saw it.

`check_landing_files_vanished` (WARN): cleaned files of the day that are gone from the landing zone.
The clean step takes their rows out of the day, key by key, as a rebuild of the files left would
(`fs_assets.ingest.replaced_files`); the ledger keeps each as `vanished`, with the clean rows the day
lost with it. Nothing else says so: the books balance and the day stays fresh. It warns while the
day has such files and resolves once each is back (read again as a new file).

`check_landing_files_refused`: a landing file of the day that the clean step refused is still
there, its rows in no table.

A refused file (bad bytes, a name the filesystem cannot open, over a limit) is one quarantine row
and a ledger row with `outcome = 'refused'`; the rest of its day arrives. Its readings are missing
until someone has it sent again or removes it, and nothing else says so: the books balance (the
file was accounted for), no clock stops (the other files keep it fresh). So this check pages, once
per day with refused files, and resolves when none is left in the landing zone: re-admitted (sent
again under its name, read by the next run) or deleted on purpose.
"""

import dagster as dg
from pyspark.sql import functions as F

from fs_assets.ingest.landing import list_landing_files
from fs_assets.ingest.ledger import REFUSED, VANISHED
from fs_assets.metadata import table_metadata
from fs_assets.partitions import daily_partitions
from fs_checks.results import check_result
from fs_domain.tables import LEDGER_TABLE, QUARANTINE_TABLE
from fs_domain.verdicts import Verdict, guide_section
from fs_resources.delta import DeltaTableMissing, DeltaTables
from fs_resources.filesystem import filesystem_for
from fs_resources.settings import landing_root

CLEAN_ASSET = dg.AssetKey("clean_sensor_readings")
CHECK_LANDING_FILES_REFUSED = "check_landing_files_refused"
CHECK_LANDING_FILES_VANISHED = "check_landing_files_vanished"
WHAT_TO_DO_VANISHED = (
    "Cleaned landing files of the day are gone from the landing zone and the day lost their readings: read `files` "
    f"(each with the clean rows lost), then restore each or accept the loss; {guide_section('Landing files gone after cleaning')}"
)
WHAT_TO_DO = (
    "Landing files the clean step refused are still in the landing zone, their readings in no table: read `files` "
    f"(and each one's quarantine row), then have each sent again under its name or delete it; {guide_section('Landing files refused or failing to read')}"
)


@dg.asset_check(
    asset=CLEAN_ASSET,
    name=CHECK_LANDING_FILES_REFUSED,
    partitions_def=daily_partitions,
    description="No landing file of the day refused (unreadable, over a limit) and still in the landing zone: "
    "pages until each is sent again or deleted.",
)
def check_landing_files_refused(context: dg.AssetCheckExecutionContext, delta: DeltaTables) -> dg.AssetCheckResult:
    days = list(context.partition_keys)
    refused = {
        r["source_file"]: (r["landing_date"].isoformat(), r["size_bytes"], r["mtime_ns"])
        for r in _ledger_rows(delta, days, REFUSED, "outcome", "landing_date", "source_file", "size_bytes", "mtime_ns")
    }
    root = landing_root()
    fs = filesystem_for(root, delta.session)
    listed = {
        f.path: (f.size, f.mtime_ns) for day in sorted({d for d, _, _ in refused.values()}) for f in list_landing_files(fs, root, day)
    }
    # Still there as it was refused; one that changed since is re-admitted by the next run, not this check's.
    present = sorted(path for path, (_, size, mtime) in refused.items() if listed.get(path) == (size, mtime))
    reasons = _reasons(delta, days, present)
    verdict = Verdict(len(present), 0, "==", "refused landing files still in the landing zone", WHAT_TO_DO)
    return check_result(
        verdict,
        context=context,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{len(present)} refused file(s) still in the landing zone: {', '.join(present[:3])}" if present else None,
        metadata={
            "refused_files_removed_since": len(refused) - len(present),
            "files": table_metadata([{"file": p, "day": refused[p][0], "reason": reasons.get(p, "")} for p in present[:200]]),
        },
    )


def _ledger_rows(delta: DeltaTables, days: list[str], outcome: str, needs: str, *columns) -> list:
    """The ledger's rows of `days` with `outcome`, sorted by day and file; none while the ledger (or
    its column `needs`, added by a later version) does not exist yet."""
    try:
        ledger = delta.read(LEDGER_TABLE)
    except DeltaTableMissing:
        return []
    if needs not in ledger.columns:
        return []
    selected = ledger.where(F.col("landing_date").isin(days) & (F.col("outcome") == outcome)).select(*columns)
    return selected.orderBy("landing_date", "source_file").collect()


def _reasons(delta: DeltaTables, days: list[str], files: list[str]) -> dict[str, str]:
    """Each refused file's quarantine reason and error, for the page."""
    if not files:
        return {}
    rows = (
        delta.read(QUARANTINE_TABLE)
        .where(F.col("landing_date").isin(days) & F.col("source_file").isin(files))
        .select("source_file", "reason", "detail")
        .collect()
    )
    return {r["source_file"]: f"{r['reason']}: {(r['detail'] or '')[:200]}" for r in rows}


@dg.asset_check(
    asset=CLEAN_ASSET,
    name=CHECK_LANDING_FILES_VANISHED,
    partitions_def=daily_partitions,
    description="No cleaned landing file of the day gone from the landing zone: warns with the clean rows the day lost, "
    "until each file is back.",
)
def check_landing_files_vanished(context: dg.AssetCheckExecutionContext, delta: DeltaTables) -> dg.AssetCheckResult:
    days = list(context.partition_keys)
    lost_rows = F.coalesce("clean_rows_lost", F.lit(0)).alias("lost")
    gone = _ledger_rows(delta, days, VANISHED, "clean_rows_lost", "landing_date", "source_file", lost_rows, "processed_at")
    lost = sum(r["lost"] for r in gone)
    verdict = Verdict(lost, 0, "==", "clean rows lost with landing files gone from the landing zone", WHAT_TO_DO_VANISHED)
    return check_result(
        verdict,
        context=context,
        passed=not gone,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{len(gone)} cleaned file(s) gone from the landing zone, {lost:,} clean rows lost: "
        f"{', '.join(r['source_file'] for r in gone[:3])}"
        if gone
        else None,
        metadata={
            "vanished_files": len(gone),
            "clean_rows_lost": lost,
            "files": table_metadata(
                [
                    {
                        "file": r["source_file"],
                        "day": r["landing_date"].isoformat(),
                        "clean_rows_lost": r["lost"],
                        "noticed_at": str(r["processed_at"]),
                    }
                    for r in gone[:200]
                ]
            ),
        },
    )


landing_checks = [check_landing_files_refused, check_landing_files_vanished]
