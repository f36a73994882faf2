"""The ledger of landing files already cleaned, which makes ingest incremental.

A run of `clean_sensor_readings` cleans only the files its day's ledger does not list yet, and
merges their readings into the day (latest ingested wins, as in a rebuild). A cleaned file rewritten
or appended in place (same path, new size or time), or gone from the landing zone, costs the keys it
touches, not the day (`fs_assets.ingest.replaced_files`). A day is rebuilt from all its files when
the ledger cannot vouch for what the table holds: the day has clean rows but no ledger (written
before the ledger existed), or the run asks for it (`rebuild: true`).

Why a ledger rather than hourly partitions: files arrive per gateway and per quarter hour, but late
files carry readings of any hour, so an hourly partition would still have to be re-read whole for
one late file; the ledger makes the unit of work the file itself, whatever hours it covers.

Each file's row says how its rows ended: `raw = quarantined + clean_rows_added + duplicates_dropped`,
where `clean_rows_added` counts its readings that were new keys when it was cleaned. Summed over a
day it must match the tables: clean rows = sum of `clean_rows_added`, quarantine rows = sum of
`quarantined_rows` (the per-day books of `check_accounting_identity`).

A file's `outcome` is `cleaned`, or `refused` when it was not read at all for a reason that will
not pass by itself (a bad footer or magic number, a limit): it stands as one quarantine record, and
nothing of it is in the clean table. A refused file that changes (fixed in place, or touched after
a limit was raised) is read again on its own, its record and ledger row replaced. A file that
vanished before it could be read has no row. A cleaned file that vanished later is `vanished`: its
rows left the day, its counts are zero and `clean_rows_lost` keeps how many clean rows the day lost
with it (`check_landing_files_vanished` warns while the day has such files); listed again, it is
read as a new file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fs_resources.filesystem import FileStatus

LEDGER_SCHEMA = T.StructType(
    [
        T.StructField("landing_date", T.DateType()),
        T.StructField("source_file", T.StringType()),
        T.StructField("size_bytes", T.LongType()),
        T.StructField("mtime_ns", T.LongType()),
        T.StructField("batch_id", T.StringType()),
        T.StructField("run_id", T.StringType()),
        T.StructField("raw_rows", T.LongType()),
        T.StructField("quarantined_rows", T.LongType()),
        T.StructField("clean_rows_added", T.LongType()),
        T.StructField("duplicates_dropped", T.LongType()),
        T.StructField("processed_at", T.TimestampType()),
        T.StructField("outcome", T.StringType()),  # CLEANED, REFUSED or VANISHED; NULL in rows written before it existed: cleaned
        T.StructField("clean_rows_lost", T.LongType()),  # VANISHED: the day's clean rows no other file held
        # The device range of the file's kept rows, so a rewrite finds its old rows in the clean table by
        # the files' `device_id` statistics; NULL when it kept none, or in rows written before them.
        T.StructField("device_id_min", T.StringType()),
        T.StructField("device_id_max", T.StringType()),
    ]
)
CLEANED = "cleaned"
REFUSED = "refused"
VANISHED = "vanished"


class Entry(NamedTuple):
    """What the ledger holds of one file: the stamp it was read with, and whether it was refused."""

    size: int
    mtime_ns: int
    refused: bool = False
    vanished: bool = False
    devices: tuple[str, str] | None = None  # the device range of its kept rows, when the ledger knows it


@dataclass
class DayPlan:
    """What a run does for one landing day."""

    day: str
    files: list[FileStatus]
    rebuild: bool
    why: str
    new: list[FileStatus] = field(default_factory=list)  # files to clean: not cleaned yet, re-admitted or rewritten
    readmitted: list[FileStatus] = field(default_factory=list)  # refused files changed since: read again
    rewritten: list[FileStatus] = field(default_factory=list)  # cleaned files rewritten or appended since (in `new`)
    vanished: list[str] = field(default_factory=list)  # cleaned files gone from the landing zone since
    # Files already cleaned that may hold keys the rewritten or vanished files touch: read again for
    # those keys only (`replaced_files.choose_rereads`), their books left as they are.
    reread: list[FileStatus] = field(default_factory=list)

    @property
    def replaces_keys(self) -> bool:
        """Whether the day's keys touched by rewritten or vanished files are judged again among all their rows."""
        return not self.rebuild and bool(self.rewritten or self.vanished)

    @property
    def cleaned(self) -> list[FileStatus]:
        """The files whose rows this run accounts for, and writes ledger rows of."""
        return self.files if self.rebuild else self.new

    @property
    def to_read(self) -> list[FileStatus]:
        return self.files if self.rebuild else self.new + self.reread


def plan(
    days: list[str],
    listed: dict[str, list[FileStatus]],
    ledger: dict[str, dict[str, Entry]],
    days_with_rows: set[str],
    force: bool,
) -> list[DayPlan]:
    """Per day: rebuild from all files, or clean only the files the ledger does not list (and the
    refused ones that changed since: nothing of them is in the day, so they cost no rebuild)."""
    plans = []
    for day in days:
        files, known = listed.get(day, []), ledger.get(day, {})
        current = {f.path: (f.size, f.mtime_ns) for f in files}
        cleaned = {p: e for p, e in known.items() if not e.refused and not e.vanished}
        rewritten = [f for f in files if f.path in cleaned and current[f.path] != cleaned[f.path][:2]]
        vanished = sorted(p for p in cleaned if p not in current)
        readmitted = [f for f in files if f.path in known and known[f.path].refused and current[f.path] != known[f.path][:2]]
        if force:
            plans.append(DayPlan(day, files, True, "rebuild requested (run config `rebuild: true`)"))
        elif not known and day in days_with_rows:
            plans.append(DayPlan(day, files, True, "the day holds clean rows but no ledger: rebuilt once to start one"))
        elif not known:
            plans.append(DayPlan(day, files, True, "first run of the day"))
        else:
            new = [f for f in files if f.path not in known or known[f.path].vanished or f in readmitted or f in rewritten]
            why = ["incremental"]
            if readmitted:
                why.append(f"{len(readmitted)} refused file(s) changed since and read again")
            if rewritten or vanished:
                why.append(
                    f"the keys of {len(rewritten)} cleaned file(s) rewritten and {len(vanished)} gone since judged again, "
                    f"e.g. {(rewritten[0].path if rewritten else vanished[0])}"
                )
            plans.append(DayPlan(day, files, False, ", ".join(why), new=new, readmitted=readmitted, rewritten=rewritten, vanished=vanished))
    return plans


def batch_id(plans: list[DayPlan]) -> str:
    """Names the work of a run by its inputs, so a re-run of the same work is recognised."""
    digest = hashlib.sha1()
    for p in plans:
        digest.update(f"{p.day}\0{int(p.rebuild)}\n".encode())
        for f in p.cleaned:
            digest.update(f"{f.path}\0{f.size}\0{f.mtime_ns}\n".encode())
        for path in p.vanished:
            digest.update(f"{path}\0gone\n".encode())
    return digest.hexdigest()[:20]


def read_ledger(ledger: DataFrame, days: list[str]) -> dict[str, dict[str, Entry]]:
    def column(name: str):  # a ledger written before the column: NULL
        return (F.col(name) if name in ledger.columns else F.lit(None).cast("string")).alias(name)

    rows = (
        ledger.where(ledger.landing_date.isin(days))
        .select("landing_date", "source_file", "size_bytes", "mtime_ns", *map(column, ("outcome", "device_id_min", "device_id_max")))
        .collect()
    )
    known: dict[str, dict[str, Entry]] = {}
    for r in rows:
        devices = (r["device_id_min"], r["device_id_max"]) if r["device_id_min"] is not None else None
        known.setdefault(r["landing_date"].isoformat(), {})[r["source_file"]] = Entry(
            r["size_bytes"], r["mtime_ns"], r["outcome"] == REFUSED, r["outcome"] == VANISHED, devices
        )
    return known


def ledger_rows(
    session: SparkSession,
    plans: list[DayPlan],
    per_file: dict[str, tuple[int, int, int, str | None, str | None]],
    batch: str,
    run_id: str,
    now: datetime,
    refused: Collection[str] = (),
    vanished: Collection[str] = (),
) -> DataFrame:
    """One row per file read by this run (none for a file that vanished before it could be read);
    `per_file` maps a file to (raw, quarantined, clean rows added, its kept rows' smallest and largest device)."""
    rows = []
    for p in plans:
        for f in p.cleaned:
            if f.path in vanished:
                continue
            raw, quarantined, added, device_min, device_max = per_file.get(f.path, (0, 0, 0, None, None))
            rows.append(
                (
                    datetime.fromisoformat(p.day).date(),
                    f.path,
                    f.size,
                    f.mtime_ns,
                    batch,
                    run_id,
                    raw,
                    quarantined,
                    added,
                    raw - quarantined - added,
                    now.replace(tzinfo=None),
                    REFUSED if f.path in refused else CLEANED,
                    None,
                    device_min,
                    device_max,
                )
            )
    return session.createDataFrame(rows, LEDGER_SCHEMA)
