"""The books of clean readings, and what the landing files' columns looked like.

`check_accounting_identity` is a blocking check of `clean_sensor_readings` that the clean step
evaluates itself: only the step knows how many raw rows it read. It holds at two levels:
- the run: raw rows read = clean rows added + quarantined + duplicates dropped, per day;
- the day: the ledger's sums over every file ever cleaned for the day match the tables (clean rows
  held = rows added, quarantine rows held = rows quarantined, raw = added + quarantined + dropped),
  with quarantined rows re-admitted since (`rejudgement`) moved from quarantined to added or dropped;
- the file: a Parquet file yields the rows its footer promises. One read in part leaves rows no
  count can see, so its day fails too, naming the file.

`check_landing_schema_drift` (WARN) names files that carried extra columns (ignored) or lacked
sensor columns (NULL, flagged `{sensor}:missing_column`).
The other ingest checks, which re-read the written table, are in `fs_checks.ingest_checks`.
"""

from dataclasses import dataclass
from datetime import datetime

import dagster as dg

from fs_assets.ingest.cleaning import PartitionAccounting
from fs_assets.metadata import table_metadata
from fs_domain.verdicts import Verdict, guide_section

CHECK_ACCOUNTING = "check_accounting_identity"
CHECK_SCHEMA_DRIFT = "check_landing_schema_drift"
CLEAN_ASSET = "clean_sensor_readings"

# These checks are evaluated by the clean step itself, which cannot use `fs_checks.results`: their
# results carry the same shape through `Verdict.metadata()`.
GUIDE = guide_section("Clean readings: accounting and landing columns")
WHAT_TO_DO_BOOKS = f"Rows of a day are unaccounted for and everything downstream of it waits: read `books`, rebuild the day; {GUIDE}"
WHAT_TO_DO_COLUMNS = f"Landing files differ from the contract's columns (nothing is lost): read `files`, tell the producer; {GUIDE}"


@dataclass(frozen=True)
class ReadInPart:
    """A Parquet file that yielded fewer rows than its footer promises."""

    day: str
    rows_read: int
    rows_promised: int

    @property
    def missing(self) -> int:
        return self.rows_promised - self.rows_read


accounting_check_spec = dg.AssetCheckSpec(
    name=CHECK_ACCOUNTING,
    asset=dg.AssetKey("clean_sensor_readings"),
    blocking=True,
    description="Per run and per day: raw rows = clean rows + quarantined rows + duplicates dropped, "
    "with the day's ledger matching the rows the tables hold and every Parquet file read whole.",
)
schema_drift_check_spec = dg.AssetCheckSpec(
    name=CHECK_SCHEMA_DRIFT,
    asset=dg.AssetKey("clean_sensor_readings"),
    description="Landing files of this run had exactly the contract's columns "
    "(extra columns are ignored, missing sensor columns give flagged NULLs).",
)


@dataclass
class DayBooks:
    """A day's books over every file cleaned for it (the ledger) against what the tables hold."""

    day: str
    raw_rows: int = 0
    quarantined_rows: int = 0
    clean_rows_added: int = 0
    duplicates_dropped: int = 0
    clean_in_table: int = 0
    quarantined_in_table: int = 0  # rows still quarantined: re-admitted ones are marked, not counted
    # Quarantined rows judged again and re-admitted (`rejudgement`): they left the quarantine for a
    # new key of clean readings (`readmitted_added`) or for the duplicates dropped. The ledger keeps
    # the counts its files were cleaned with; these move rows between its columns.
    readmitted_added: int = 0
    readmitted_duplicates: int = 0
    latest_ts: datetime | None = None  # the newest reading the clean table holds for the day

    @property
    def balanced(self) -> bool:
        return self.imbalance_rows == 0

    @property
    def imbalance_rows(self) -> int:
        """Rows by which the day's books miss: unaccounted raw rows, and table rows the ledger does not match."""
        readmitted = self.readmitted_added + self.readmitted_duplicates
        return (
            abs(self.raw_rows - self.clean_rows_added - self.quarantined_rows - self.duplicates_dropped)
            + abs(self.clean_in_table - self.clean_rows_added - self.readmitted_added)
            + abs(self.quarantined_in_table - (self.quarantined_rows - readmitted))
        )


@dataclass(frozen=True)
class Judged:
    """The partition (or `first..last` range) and the run a check evaluated inside the clean step judged."""

    partition: str
    run_id: str

    @classmethod
    def of(cls, days: list[str], run_id: str) -> "Judged":
        return cls(days[0] if len(days) == 1 else f"{days[0]}..{days[-1]}", run_id)

    def shape(self) -> dict[str, str]:
        return {"asset": CLEAN_ASSET, "partition": self.partition, "run_id": self.run_id}


def evaluate_accounting(
    books: dict[str, PartitionAccounting], days: dict[str, DayBooks], judged: Judged, read_in_part: dict[str, ReadInPart] | None = None
) -> dg.AssetCheckResult:
    """`read_in_part`: the run's Parquet files (by path) that yielded fewer rows than their footer promises."""
    read_in_part = read_in_part or {}
    rows = []
    unbalanced = []
    imbalance = 0
    for partition in sorted(set(books) | set(days) | {r.day for r in read_in_part.values()}):
        run = books.get(partition, PartitionAccounting(partition=partition))
        day = days.get(partition, DayBooks(partition))
        unseen = sum(r.missing for r in read_in_part.values() if r.day == partition)
        missed = abs(run.raw_rows - run.clean_rows - run.quarantined_rows - run.duplicates_dropped) + day.imbalance_rows + unseen
        imbalance += missed
        if missed:
            unbalanced.append(partition)
        rows.append(
            {
                "partition": partition,
                "run_raw": run.raw_rows,
                "run_clean_added": run.clean_rows,
                "run_quarantined": run.quarantined_rows,
                "run_duplicates_dropped": run.duplicates_dropped,
                "day_raw": day.raw_rows,
                "day_clean_in_table": day.clean_in_table,
                "day_clean_added": day.clean_rows_added,
                "day_quarantined_in_table": day.quarantined_in_table,
                "day_quarantined": day.quarantined_rows,
                "day_readmitted_added": day.readmitted_added,
                "day_readmitted_duplicates": day.readmitted_duplicates,
                "rows_not_read": unseen,
                "books": "UNBALANCED" if missed else "ok",
            }
        )
    verdict = Verdict(len(unbalanced), 0, "==", "days whose books do not balance", WHAT_TO_DO_BOOKS, **judged.shape())
    return dg.AssetCheckResult(
        check_name=CHECK_ACCOUNTING,
        passed=verdict.holds,
        severity=dg.AssetCheckSeverity.ERROR,
        description=verdict.sentence() + (f": {', '.join(unbalanced)} miss {imbalance:,} rows" if unbalanced else ""),
        metadata=verdict.metadata()
        | {
            "imbalance_rows": imbalance,
            "partitions_checked": len(rows),
            "unbalanced_partitions": dg.MetadataValue.text(", ".join(unbalanced) or "none"),
            "books": table_metadata(rows),
            "files_read_in_part": dg.MetadataValue.json(
                {path: f"{r.rows_read:,} of {r.rows_promised:,} rows could be read" for path, r in sorted(read_in_part.items())}
            ),
        },
    )


def evaluate_schema_drift(extra: dict[str, list[str]], missing: dict[str, list[str]], judged: Judged) -> dg.AssetCheckResult:
    files = sorted(set(extra) | set(missing))
    verdict = Verdict(len(files), 0, "==", "landing files off the contract's columns", WHAT_TO_DO_COLUMNS, **judged.shape())
    return dg.AssetCheckResult(
        check_name=CHECK_SCHEMA_DRIFT,
        passed=verdict.holds,
        severity=dg.AssetCheckSeverity.WARN,
        description=verdict.sentence(),
        metadata=verdict.metadata()
        | {
            "files_with_extra_columns": len(extra),
            "files_missing_sensor_columns": len(missing),
            "files": table_metadata(
                [
                    {
                        "file": f,
                        "extra_columns": ", ".join(extra.get(f, [])),
                        "missing_sensor_columns": ", ".join(missing.get(f, [])),
                    }
                    for f in files[:200]
                ]
            ),
        },
    )


def refuse_shrinking(shrinking: dict[str, tuple[int, int]], what: str) -> None:
    """Fail before anything is written when a day would keep far fewer clean rows than it holds
    (`shrinking`: day -> (rows held, rows it would keep), the days under `MIN_KEPT_SHARE`): files
    that vanished must not empty their day. `what` names the write refused."""
    if not shrinking:
        return
    detail = ", ".join(f"{day}: {was:,} -> {now:,} rows" for day, (was, now) in sorted(shrinking.items()))
    raise dg.Failure(
        description=f"refused to {what}: the day would keep far fewer clean rows ({detail}). Are its landing files gone? "
        f"Nothing was written. Restore the files, or re-run with run config `allow_shrink: true` to write it anyway.",
        metadata={"shrinking_days": dg.MetadataValue.json(sorted(shrinking))},
    )
