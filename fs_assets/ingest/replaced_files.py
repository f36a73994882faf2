"""A cleaned landing file rewritten, appended or gone costs the keys it touches, not its day.

A gateway that re-sends a file under the same name (corrected values, or the same file grown by an
append) changes rows the day already holds, and takes back rows it may have won. Dropped duplicates
are not stored, so a key the old version won may now belong to a row of another file that had
lost to it. The day is set right key by key, to exactly what a rebuild of its files would hold:

    touched keys = keys the clean table holds from the rewritten or gone files (the old version's winners)
                 ∪ keys of the rewritten and new files' kept rows
    re-read      = the day's other cleaned files that may hold a touched key: a Parquet file whose
                   footer statistics put its `device_id` range around no touched device is skipped;
                   a file without such statistics (CSV, JSON lines) is read
    winners      = latest ingested among every kept row of those keys (rewritten, new and re-read files)
    one MERGE    = a touched key with a winner takes it (inserted or replaced), one without is deleted

The MERGE names the days, the keys' `ts` and `device_id` range on the table, so Delta reads and
rewrites only the day's files whose statistics overlap them. The files re-read are judged for those
keys only: their quarantine rows and ledger counts stay as they were. The rewritten files' quarantine
rows are replaced (per day and file), their ledger rows too, and a file gone becomes a `vanished`
ledger row with zero counts and the clean rows the day lost with it (`check_landing_files_vanished`).

The books: a ledger row's `clean_rows_added` says how many keys a file added when it was cleaned,
so the day's sum of them is its clean rows (less the rows re-admitted from quarantine since). The
day's sum moves by exactly what the MERGE changed, and the rows re-admitted from the replaced
quarantine rows; that sum is given to the rewritten files' rows first and, where a file cannot hold
it (more added than it kept, or less than none), to the day's other rows.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fs_assets.ingest import ledger as ledger_mod
from fs_assets.ingest.accounting import refuse_shrinking
from fs_assets.ingest.cleaning import CLEAN_COLUMNS, FileAccounting, PartitionAccounting
from fs_assets.ingest.ledger import DayPlan, Entry
from fs_domain.contract import MIN_KEPT_SHARE
from fs_domain.tables import CLEAN_TABLE, LEDGER_TABLE, QUARANTINE_TABLE
from fs_resources.delta import DeltaTables, DeltaWrite, replace_where_predicate
from fs_resources.filesystem import FileStatus

STEP = "clean-key-replace"  # the batch step name of the MERGE (`{batch}-clean-key-replace`)
LEDGER_STEP = "ledger-replace"
# A quarantine row re-admitted as a new key (`rejudgement`): the day's books count it as clean.
_READMITTED_ADDED = "added"
_KEY = ["device_id", "ts", "reading_date"]


def held_version(delta: DeltaTables, batch: str) -> int | None:
    """The clean table's version the batch's keys are judged against: before its MERGE when a run of the
    same batch, cut short, committed it already; else the table as it is (None when it does not exist)."""
    if not delta.exists(CLEAN_TABLE):
        return None
    done = delta.batch_commit(CLEAN_TABLE, f"{batch}-{STEP}")
    return done.version - 1 if done else delta.version(CLEAN_TABLE)


def _old_paths(p: DayPlan) -> list[str]:
    return [f.path for f in p.rewritten] + list(p.vanished)


def device_range(session: SparkSession, f: FileStatus) -> tuple[str, str] | None:
    """The smallest and largest `device_id` a Parquet file's footer records over its row groups, or None
    when it cannot vouch for them (no statistics, a column not text, the footer unreadable): then the
    file may hold any device."""
    try:
        jvm = session._jvm
        source = jvm.org.apache.parquet.hadoop.util.HadoopInputFile.fromPath(
            jvm.org.apache.hadoop.fs.Path(f.uri), session._jsc.hadoopConfiguration()
        )
        reader = jvm.org.apache.parquet.hadoop.ParquetFileReader.open(source)
        try:
            footer = reader.getFooter()
            schema = footer.getFileMetaData().getSchema()
            if not schema.containsField("device_id"):
                return None
            index = schema.getFieldIndex("device_id")
            if str(schema.getType(index).asPrimitiveType().getPrimitiveTypeName()) != "BINARY":
                return None
            low = high = None
            for block in footer.getBlocks():
                stats = block.getColumns().get(index).getStatistics()
                if stats is None or stats.isEmpty():
                    return None
                if not stats.hasNonNullValue():
                    continue  # only NULL ids: malformed rows, never a kept key
                lo = bytes(stats.genericGetMin().getBytes()).decode("utf-8")
                hi = bytes(stats.genericGetMax().getBytes()).decode("utf-8")
                low, high = min(lo, low or lo), max(hi, high or hi)
            return (low, high) if low is not None else ("", "")
        finally:
            reader.close()
    except Exception:  # noqa: BLE001 - any doubt makes the file a candidate, read by the normal (retrying) path
        return None


def old_devices(plans: list[DayPlan], known: dict[str, dict[str, Entry]]):
    """A filter on `device_id` that holds every clean row the plans' rewritten or vanished files may
    still have in the clean table: the span of the device ranges the ledger recorded when they were
    cleaned, so Delta reads only the day's files whose statistics overlap it. True (every row) when
    the ledger has no range for one of them (rows written before it kept them)."""
    ranges = [known.get(p.day, {}).get(path) for p in plans if p.replaces_keys for path in _old_paths(p)]
    if not ranges:
        return F.lit(False)
    if any(e is None or e.devices is None for e in ranges):
        return F.lit(True)
    return F.col("device_id").between(min(e.devices[0] for e in ranges), max(e.devices[1] for e in ranges))


def _overlaps(devices: list[str], ranges: list[tuple[str, str]], low: str, high: str) -> bool:
    i = bisect.bisect_left(devices, low)
    if i < len(devices) and devices[i] <= high:
        return True
    return any(lo <= high and low <= hi for lo, hi in ranges)


def choose_rereads(
    delta: DeltaTables, session: SparkSession, plans: list[DayPlan], known: dict[str, dict[str, Entry]], version: int | None
) -> dict[str, dict[str, str]]:
    """Fill each key-replacing day's `reread`: its other cleaned files that may hold a touched key.
    Returns {day: {path: why}} for the run's metadata."""
    why: dict[str, dict[str, str]] = {}
    for p in plans:
        if not p.replaces_keys:
            continue
        old = _old_paths(p)
        held = delta.read(CLEAN_TABLE, version=version) if version is not None else None
        devices = (
            sorted(
                r["device_id"]
                for r in held.where((F.col("reading_date") == p.day) & F.col("source_file").isin(old) & old_devices([p], known))
                .select("device_id")
                .distinct()
                .collect()
            )
            if held is not None and old
            else []
        )
        ranges: list[tuple[str, str]] = []
        unbounded = None
        for f in p.new:
            r = device_range(session, f) if f.name.lower().endswith(".parquet") else None
            if r is None:
                unbounded = f.path
                break
            if r != ("", ""):
                ranges.append(r)
        entries = known.get(p.day, {})
        candidates = [f for f in p.files if f not in p.new and f.path in entries and not entries[f.path].refused]
        reasons: dict[str, str] = {}
        for f in candidates:
            if unbounded is not None:
                reasons[f.path] = f"the devices of {unbounded} are not known from a footer: every file may hold its keys"
                continue
            r = device_range(session, f) if f.name.lower().endswith(".parquet") else None
            if r is None:
                reasons[f.path] = "no device statistics in the file: it may hold any touched key"
            elif r != ("", "") and _overlaps(devices, ranges, *r):
                reasons[f.path] = f"its devices {r[0]}..{r[1]} include touched ones"
        p.reread = [f for f in candidates if f.path in reasons]
        why[p.day] = reasons
    return why


@dataclass
class KeyReplacement:
    """What replacing the touched keys did, per day."""

    write: DeltaWrite | None = None
    keys: dict[str, int] = field(default_factory=dict)
    held_before: dict[str, int] = field(default_factory=dict)  # clean rows of the touched keys before
    held_after: dict[str, int] = field(default_factory=dict)  # and after
    lost_by_file: dict[str, int] = field(default_factory=dict)  # a gone file: clean rows the day lost with it

    def change(self, day: str) -> int:
        return self.held_after.get(day, 0) - self.held_before.get(day, 0)

    def metadata(self) -> dict[str, dict[str, int]]:
        return {
            day: {"keys_touched": n, "clean_rows_before": self.held_before.get(day, 0), "clean_rows_after": self.held_after.get(day, 0)}
            for day, n in sorted(self.keys.items())
        }


def _unchanged(columns: Iterable[str]) -> str:
    return " AND ".join(f"t.`{c}` <=> s.`{c}`" for c in columns)


def _text(value) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


def replace_keys(
    delta: DeltaTables,
    rows: DataFrame,
    plans: list[DayPlan],
    version: int | None,
    batch: str,
    run_id: str,
    inputs: dict[str, int],
    allow_shrink: bool,
    known: dict[str, dict[str, Entry]],
) -> KeyReplacement:
    """Judge the touched keys of the key-replacing days again among `rows` (the run's de-duplicated kept
    rows of those days: CLEAN_COLUMNS + landing_date) and write the winners in one MERGE."""
    days = [p.day for p in plans if p.replaces_keys]
    result = KeyReplacement()
    old_paths = [path for p in plans if p.replaces_keys for path in _old_paths(p)]
    new_paths = [f.path for p in plans if p.replaces_keys for f in p.new]
    rows = rows.where(F.col("reading_date").isin(days)).select(*CLEAN_COLUMNS)
    new_keys = rows.where(F.col("source_file").isin(new_paths)).select(*_KEY) if new_paths else None
    held = delta.read(CLEAN_TABLE, version=version).where(F.col("reading_date").isin(days)) if version is not None else None
    old = (
        held.where(F.col("source_file").isin(old_paths) & old_devices(plans, known)).select(*_KEY, F.col("source_file").alias("old_file"))
        if held is not None and old_paths
        else None
    )
    parts = [k for k in (old.select(*_KEY) if old is not None else None, new_keys) if k is not None]
    if not parts:
        return result
    keys = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])
    keys = keys.distinct().persist(StorageLevel.MEMORY_AND_DISK)
    winners = rows.join(keys, on=_KEY, how="left_semi").persist(StorageLevel.MEMORY_AND_DISK)
    try:
        day_of = F.col("reading_date").cast("string")
        bounds = keys.agg(
            F.date_format(F.min("ts"), "yyyy-MM-dd HH:mm:ss.SSSSSS").alias("lo"),
            F.date_format(F.max("ts"), "yyyy-MM-dd HH:mm:ss.SSSSSS").alias("hi"),
            F.min("device_id").alias("dlo"),
            F.max("device_id").alias("dhi"),
        ).first()
        for r in keys.groupBy(day_of.alias("d")).count().collect():
            result.keys[r["d"]] = r["count"]
        if held is not None and result.keys:
            # The keys' device and time span named first: Delta reads only the files that may hold them.
            near = held.where(F.col("device_id").between(bounds["dlo"], bounds["dhi"]))
            for r in near.join(keys, on=_KEY, how="left_semi").groupBy(day_of.alias("d")).count().collect():
                result.held_before[r["d"]] = r["count"]
        for r in winners.groupBy(day_of.alias("d")).count().collect():
            result.held_after[r["d"]] = r["count"]
        if old is not None:
            lost = old.join(winners, on=_KEY, how="left_anti").where(F.col("old_file").isin([v for p in plans for v in p.vanished]))
            for r in lost.groupBy("old_file").count().collect():
                result.lost_by_file[r["old_file"]] = r["count"]
        if not result.keys:
            return result
        if held is not None and not allow_shrink:
            _refuse_shrinking(held, result)
        done = delta.batch_commit(CLEAN_TABLE, f"{batch}-{STEP}")
        if done:
            result.write = done
            return result
        on = (
            f"{replace_where_predicate({'t.reading_date': days})} AND t.ts >= TIMESTAMP'{bounds['lo']}' AND t.ts <= TIMESTAMP'{bounds['hi']}' "
            f"AND t.device_id >= {_text(bounds['dlo'])} AND t.device_id <= {_text(bounds['dhi'])} "
            "AND t.device_id = s.device_id AND t.ts = s.ts"
        )
        # Every touched key, with its winner's columns or NULLs (no winner: its held row is deleted).
        source = keys.join(winners, on=_KEY, how="left").select(*CLEAN_COLUMNS)
        result.write = delta.merge(
            source,
            CLEAN_TABLE,
            on,
            update_when=f"NOT ({_unchanged(CLEAN_COLUMNS)})",
            delete_when="s.source_file IS NULL",
            run_id=run_id,
            inputs=inputs,
            batch=f"{batch}-{STEP}",
        )
        return result
    finally:
        winners.unpersist()
        keys.unpersist()


def _refuse_shrinking(held: DataFrame, result: KeyReplacement) -> None:
    totals = {r["d"]: r["count"] for r in held.groupBy(F.col("reading_date").cast("string").alias("d")).count().collect()}
    shrinking = {day: (n, n + result.change(day)) for day, n in totals.items() if n and n + result.change(day) < n * MIN_KEPT_SHARE}
    refuse_shrinking(shrinking, "replace the keys of rewritten or vanished landing files")


def readmitted_replaced(delta: DeltaTables, plans: list[DayPlan], batch_quarantine_step: str) -> dict[str, int]:
    """Per day, quarantine rows of the replaced files that had been re-admitted as new keys, as the
    quarantine held them before this batch replaced them: the books counted them as clean."""
    days = [p.day for p in plans if p.replaces_keys]
    old_paths = [path for p in plans if p.replaces_keys for path in _old_paths(p)]
    if not days or not old_paths or not delta.exists(QUARANTINE_TABLE):
        return {}
    done = delta.batch_commit(QUARANTINE_TABLE, batch_quarantine_step)
    table = delta.read(QUARANTINE_TABLE, version=done.version - 1) if done else delta.read(QUARANTINE_TABLE)
    if "readmission" not in table.columns:
        return {}
    counted = (
        table.where(F.col("landing_date").isin(days) & F.col("source_file").isin(old_paths) & (F.col("readmission") == _READMITTED_ADDED))
        .groupBy(F.col("landing_date").cast("string").alias("d"))
        .count()
        .collect()
    )
    return {r["d"]: r["count"] for r in counted}


def ledger_for_days(
    delta: DeltaTables,
    session: SparkSession,
    plans: list[DayPlan],
    per_file: dict[str, FileAccounting],
    replacement: KeyReplacement,
    readmitted: dict[str, int],
    batch: str,
    run_id: str,
    now: datetime,
    refused: set[str],
    unread: set[str],
) -> tuple[DataFrame, dict[str, PartitionAccounting]]:
    """The whole ledger partition of each key-replacing day, and the run's books of those days.

    `per_file`: the run's counts of the files it cleaned; `refused`/`unread`: files refused, or gone
    before they could be read, by this run."""
    days = [p.day for p in plans if p.replaces_keys]
    held = delta.read(LEDGER_TABLE).where(F.col("landing_date").isin(days)).collect()
    by_day: dict[str, list[dict]] = {}
    for r in held:
        by_day.setdefault(r["landing_date"].isoformat(), []).append(r.asDict())
    out: list[dict] = []
    books: dict[str, PartitionAccounting] = {}
    for p in plans:
        if not p.replaces_keys:
            continue
        old = {r["source_file"]: r for r in by_day.get(p.day, [])}
        target = sum(r["clean_rows_added"] or 0 for r in old.values()) + replacement.change(p.day) + readmitted.get(p.day, 0)
        replaced = {f.path for f in p.new} | set(p.vanished)
        rows = [dict(r) for path, r in old.items() if path not in replaced]
        mine: list[dict] = []
        for f in p.new:
            if f.path in unread:
                continue
            acc = per_file.get(f.path, FileAccounting())
            kept = acc.raw_rows - acc.quarantined_rows
            before = old.get(f.path, {}).get("clean_rows_added") or 0 if f in p.rewritten else 0
            mine.append(
                {
                    "landing_date": datetime.fromisoformat(p.day).date(),
                    "source_file": f.path,
                    "size_bytes": f.size,
                    "mtime_ns": f.mtime_ns,
                    "batch_id": batch,
                    "run_id": run_id,
                    "raw_rows": acc.raw_rows,
                    "quarantined_rows": acc.quarantined_rows,
                    "clean_rows_added": min(max(before, 0), max(kept, 0)),
                    "processed_at": now.replace(tzinfo=None),
                    "outcome": ledger_mod.REFUSED if f.path in refused else ledger_mod.CLEANED,
                    "clean_rows_lost": None,
                    "device_id_min": acc.device_min,
                    "device_id_max": acc.device_max,
                }
            )
        for path in p.vanished:
            was = old[path]
            mine.append(
                was
                | {
                    "batch_id": batch,
                    "run_id": run_id,
                    "raw_rows": 0,
                    "quarantined_rows": 0,
                    "clean_rows_added": 0,
                    "processed_at": now.replace(tzinfo=None),
                    "outcome": ledger_mod.VANISHED,
                    "clean_rows_lost": replacement.lost_by_file.get(path, 0),
                }
            )
        _settle(target, [r for r in mine if r["outcome"] == ledger_mod.CLEANED], rows, mine)
        for r in mine + rows:
            r["duplicates_dropped"] = (r["raw_rows"] or 0) - (r["quarantined_rows"] or 0) - (r["clean_rows_added"] or 0)
        out += mine + rows
        cleaned_here = [r for r in mine if r["outcome"] != ledger_mod.VANISHED]
        b = PartitionAccounting(partition=p.day)
        b.raw_rows = sum(r["raw_rows"] for r in cleaned_here)
        b.quarantined_rows = sum(r["quarantined_rows"] for r in cleaned_here)
        b.clean_rows = sum(r["clean_rows_added"] for r in cleaned_here)
        b.duplicates_dropped = b.raw_rows - b.quarantined_rows - b.clean_rows
        books[p.day] = b
    names = [f.name for f in ledger_mod.LEDGER_SCHEMA.fields]
    return session.createDataFrame([tuple(r.get(n) for n in names) for r in out], ledger_mod.LEDGER_SCHEMA), books


def _settle(target: int, first: list[dict], others: list[dict], fallback: list[dict]) -> None:
    """Move `clean_rows_added` among the rows so that the day's sum is `target`: the rewritten files'
    rows first, each within [0, its kept rows], then the day's other cleaned rows; what none can hold
    goes to the first row (the books balance, one row's split shows it)."""
    residual = target - sum(r["clean_rows_added"] or 0 for r in others + fallback)
    for r in first + [o for o in others if o.get("outcome") in (None, ledger_mod.CLEANED)]:
        if residual == 0:
            return
        kept = (r["raw_rows"] or 0) - (r["quarantined_rows"] or 0)
        added = r["clean_rows_added"] or 0
        step = min(residual, kept - added) if residual > 0 else max(residual, -added)
        r["clean_rows_added"] = added + step
        residual -= step
    if residual:
        (first or others or fallback)[0]["clean_rows_added"] = ((first or others or fallback)[0]["clean_rows_added"] or 0) + residual
