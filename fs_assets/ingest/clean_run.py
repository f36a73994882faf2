"""One run of `clean_sensor_readings`, as named steps:

1. `plan`: which landing files of the run's days to read, from the ledger (new, rewritten, vanished,
   or every file of a day rebuilt);
2. `read`: the files read and every row judged (kept, flagged or quarantined, deduplicated), a file
   that fails refused and the rest read again, or the read retried while the failure may pass;
3. `write_rows`: clean rows and quarantine rows into their tables (a rebuilt day replaced whole, a
   merged day merged by key, a rewritten file's keys replaced), each write once per batch;
4. `write_ledger`: what each file gave, so the next run reads only what it has not seen;
5. `result`: the quarantine judged again with this run's registry and clock, the day's books set
   against the tables, the sites behind the fleet, and the run's metadata and in-step checks.
"""

import functools
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg
from pyspark import StorageLevel
from pyspark.sql import Window
from pyspark.sql import functions as F

from fs_assets.ingest import cleaning, incremental, landing, ledger, read_failures, rejudgement, site_clock
from fs_assets.ingest import replaced_files as replacing
from fs_assets.ingest.accounting import DayBooks, Judged, ReadInPart, evaluate_accounting, evaluate_schema_drift, refuse_shrinking
from fs_assets.ingest.cleaning import CLEAN_COLUMNS
from fs_assets.ingest.expected_gaps import ExpectedGapsError, read_expected_gaps
from fs_assets.metadata import latest_key, latest_value, table_metadata
from fs_domain.contract import MIN_KEPT_SHARE
from fs_domain.tables import CLEAN_TABLE, LEDGER_TABLE, QUARANTINE_TABLE, REGISTRY_TABLE
from fs_resources import settings
from fs_resources.delta import DeltaTableMissing, DeltaTables, DeltaWrite
from fs_resources.filesystem import FileSystem, filesystem_for
from fs_resources.spark import cache_uncompressed_up_to, file_splits_for, shuffle_partitions_for

CLEAN_TABLE_PROPERTIES = {
    # Features recompute only the windows whose readings changed: they read this table's change feed.
    "delta.enableChangeDataFeed": "true",
    # File statistics only where readers filter: by device and time (the MERGE skips files by `ts`).
    # Statistics on every column cost a quarter of writing a day.
    "delta.dataSkippingStatsColumns": "device_id,ts",
}


@dataclass
class Batch:
    """The run's days as the ledger plans them, and the batch id every write of the run is tagged with."""

    plans: list[ledger.DayPlan]
    known: dict[str, dict[str, ledger.Entry]]
    ignored: list[str]
    id: str
    held_version: int | None
    rereads: dict

    @property
    def rebuilt(self) -> list[str]:
        return [p.day for p in self.plans if p.rebuild]

    @property
    def replaced(self) -> list[str]:
        return [p.day for p in self.plans if p.replaces_keys]

    @property
    def merged(self) -> list[str]:
        return [p.day for p in self.plans if not p.rebuild and p.new and not p.replaces_keys]

    @property
    def to_read(self) -> dict:
        return {p.day: p.to_read for p in self.plans if p.to_read}


@dataclass
class Read:
    """The files read and their rows judged: what the writes take, and each file's and day's accounting."""

    staged: landing.Staged
    judged: object
    deduplicated: cleaning.Deduplicated
    books: dict[str, cleaning.PartitionAccounting]
    per_file: dict[str, cleaning.FileAccounting]

    def release(self) -> None:
        self.deduplicated.release()
        self.judged.unpersist()


@dataclass
class Written:
    """The writes of clean and quarantine rows, and what the ledger records of them."""

    writes: list[DeltaWrite] = field(default_factory=list)
    added: dict[str, int] = field(default_factory=dict)  # clean rows each file added
    replacement: replacing.KeyReplacement = field(default_factory=replacing.KeyReplacement)
    readmitted_replaced: object = None
    merged_files: list[str] = field(default_factory=list)


def _timed(step):
    """Adds the step's wall time to the run's `step_seconds` (in its metadata: where a run's time goes)."""

    @functools.wraps(step)
    def timed(self, *args, **kwargs):
        started = time.monotonic()
        try:
            return step(self, *args, **kwargs)
        finally:
            self.step_seconds[step.__name__] = round(time.monotonic() - started, 2)

    return timed


class CleanRun:
    """One run over its partitions' days: the registry pinned at its start, the landing zone, its
    config (`fs_assets.ingest.assets.IngestConfig`), and `now`, the clock every verdict is judged by
    (taken once the files are staged)."""

    def __init__(self, context: dg.AssetExecutionContext, config, delta: DeltaTables):
        self.context, self.config, self.delta = context, config, delta
        self.session = delta.session
        self.started = time.monotonic()
        self.step_seconds: dict[str, float] = {}
        self.days = list(context.partition_keys)
        self.run_started = datetime.now(UTC)  # no landing file is taken as ingested later than this (a clock ahead)
        try:
            self.registry, registry_version = delta.read_pinned(REGISTRY_TABLE)
        except DeltaTableMissing as exc:
            raise dg.Failure(description=f"{exc} (asset: device_registry)") from exc
        self.inputs = {REGISTRY_TABLE: registry_version}
        self.root = settings.landing_root()
        self.fs = filesystem_for(self.root, self.session)
        self.policy, self.limits = config.read_policy(), config.limits()
        self.now = self.run_started

    @_timed
    def plan(self) -> Batch:
        delta, days, log = self.delta, self.days, self.context.log
        listed = {day: landing.list_landing_files(self.fs, self.root, day) for day in days}
        ignored = [path for day in days for path in landing.ignored_files(self.fs, self.root, day)]
        if ignored:
            log.warning(f"{len(ignored)} landing entries are not .parquet, .csv or .jsonl files and were not read: {ignored[:10]}")
        known = ledger.read_ledger(delta.read(LEDGER_TABLE), days) if delta.exists(LEDGER_TABLE) else {}
        plans = ledger.plan(days, listed, known, _days_with_rows(delta, [d for d in days if d not in known]), self.config.rebuild)
        batch_id = ledger.batch_id(plans)
        replaces = any(p.replaces_keys for p in plans)
        held_version = replacing.held_version(delta, batch_id) if replaces else None
        rereads = replacing.choose_rereads(delta, self.session, plans, known, held_version) if replaces else {}
        for p in plans:
            log.info(f"{p.day}: {'rebuild from' if p.rebuild else 'incremental,'} {len(p.to_read)} file(s) to read ({p.why})")
        return Batch(plans, known, ignored, batch_id, held_version, rereads)

    @_timed
    def stage(self, batch: Batch) -> landing.Staged:
        """Footers and header lines first: they size the read."""
        try:
            staged = landing.read_landing(
                self.session,
                self.fs,
                batch.to_read,
                self.limits,
                policy=self.policy,
                log=self.context.log.warning,
                started=self.run_started,
            )
        except read_failures.ReadStillFailing as exc:
            raise dg.Failure(description=str(exc)) from exc
        self.now = datetime.now(UTC)
        return staged

    @contextmanager
    def sized_for(self, batch: Batch, staged: landing.Staged):
        """Spark's file splits, shuffle partitions and cache sized for the rows the footers promise."""
        plans, footer_rows = batch.plans, staged.report.footer_rows
        parquet_bytes = sum(f.size for p in plans for f in p.to_read if f.path in footer_rows)
        estimated = sum(footer_rows.values()) + sum(f.size // 100 for p in plans for f in p.to_read if f.path not in footer_rows)
        bytes_per_row = parquet_bytes / max(1, sum(footer_rows.values())) if footer_rows else 100.0
        with (
            file_splits_for(self.session, bytes_per_row),
            shuffle_partitions_for(self.session, estimated) as partitions,
            cache_uncompressed_up_to(self.session, estimated),
        ):
            if partitions > 4:
                self.context.log.info(f"about {estimated:,} raw rows: {partitions} shuffle partitions")
            yield

    @_timed
    def read(self, batch: Batch, staged: landing.Staged) -> Read:
        """Spark reads every file here (the first action on the judged rows): a failure naming a file
        refuses it and the others are read again, or the whole read is retried while the failure may pass."""
        session, to_read = self.session, batch.to_read
        read_for: set[str] = set()
        reread_paths = {f.path for p in batch.plans for f in p.reread}

        def attempt(refused: dict[str, read_failures.Refusal]):
            nonlocal staged, read_for
            if set(refused) != read_for:
                staged = landing.read_landing(
                    session,
                    self.fs,
                    to_read,
                    self.limits,
                    refused=refused,
                    policy=self.policy,
                    log=self.context.log.warning,
                    started=self.run_started,
                )
                read_for = set(refused)
            judged = cleaning.judged(staged.rows, self.registry, self.now).persist(StorageLevel.MEMORY_AND_DISK)
            deduplicated = None
            try:
                deduplicated = cleaning.deduplicate(cleaning.kept_readings(judged), staged.with_paths)
                # Files read again only for the keys of rewritten ones were accounted for when they were cleaned.
                own = ~F.col("file_id").isin([i for i, path in staged.paths.items() if path in reread_paths])
                books, per_file = cleaning.accounting(
                    judged.where(own), deduplicated.contested.where(own), [p.day for p in batch.plans], staged.paths
                )
            except BaseException:
                if deduplicated is not None:
                    deduplicated.release()
                judged.unpersist()
                raise
            return Read(staged, judged, deduplicated, books, per_file)

        try:
            read, _ = read_failures.settle(
                attempt,
                [f for files in to_read.values() for f in files],
                self.fs,
                lambda f: landing.read_alone(session, f),
                self.policy,
                self.context.log.warning,
            )
        except read_failures.ReadStillFailing as exc:
            raise dg.Failure(description=str(exc)) from exc
        if batch.rebuilt and not self.config.allow_shrink:
            _refuse_shrinking(self.delta, {day: read.books[day].clean_rows for day in batch.rebuilt})
        return read

    @_timed
    def write_rows(self, batch: Batch, read: Read) -> Written:
        delta, run_id, inputs = self.delta, self.context.run_id, self.inputs
        rebuilt, replaced, merged = batch.rebuilt, batch.replaced, batch.merged
        quarantine = cleaning.quarantine_rows(read.judged, read.staged.with_paths, self.now)
        kept = read.deduplicated.rows.select(*CLEAN_COLUMNS, "landing_date")
        rejudgement.prepare_quarantine(delta)
        written = Written()
        if rebuilt:
            # Replacing whole days is idempotent: a re-run of a rebuild simply writes them again.
            rebuilt_rows = F.col("landing_date").isin(rebuilt)
            q = quarantine.where(rebuilt_rows)
            written.writes.append(delta.replace_partitions(q, QUARANTINE_TABLE, {"landing_date": rebuilt}, run_id=run_id, inputs=inputs))
            c = _by_device_slice(kept.where(rebuilt_rows).select(*CLEAN_COLUMNS), self.registry)
            written.writes.append(
                delta.replace_partitions(
                    c, CLEAN_TABLE, {"reading_date": rebuilt}, run_id=run_id, inputs=inputs, properties=CLEAN_TABLE_PROPERTIES
                )
            )
        # A merged day's quarantine and ledger rows are replaced file by file: a refused file read
        # again loses its old record, and a file read twice is never counted twice. A file gone loses
        # its records; a file read again only for its keys keeps them.
        written.merged_files = sorted(f.path for p in batch.plans if p.day in merged for f in p.new)
        recorded = sorted(f.path for p in batch.plans if p.day in merged + replaced for f in p.new)
        replaced_files = sorted({*recorded, *(path for p in batch.plans if p.day in replaced for path in p.vanished)})
        written.readmitted_replaced = replacing.readmitted_replaced(delta, batch.plans, f"{batch.id}-quarantine-append")
        if merged or replaced:
            written.writes.append(
                _once(
                    delta,
                    QUARANTINE_TABLE,
                    batch.id,
                    "quarantine-append",
                    lambda b: delta.replace_partitions(
                        quarantine.where(F.col("landing_date").isin(merged + replaced) & F.col("source_file").isin(recorded)),
                        QUARANTINE_TABLE,
                        {"landing_date": merged + replaced},
                        rows_of={"source_file": replaced_files},
                        run_id=run_id,
                        batch=b,
                    ),
                )
            )
        if replaced:
            written.replacement = replacing.replace_keys(
                delta, kept, batch.plans, batch.held_version, batch.id, run_id, inputs, self.config.allow_shrink, batch.known
            )
            if written.replacement.write is not None:
                written.writes.append(written.replacement.write)
        written.added = {path: acc.kept_rows for path, acc in read.per_file.items()}
        if merged:
            merge_write, outcome = _merge(delta, kept.where(F.col("landing_date").isin(merged)), merged, batch.id, run_id, inputs)
            written.writes.append(merge_write)
            for day in merged:
                b = read.books[day]
                within = b.duplicates_dropped
                b.clean_rows = outcome.inserted_by_day.get(day, 0)
                b.duplicates_dropped = within + outcome.replaced_by_day.get(day, 0) + outcome.lost_by_day.get(day, 0)
                b.conflicting_duplicates += outcome.conflicting_by_day.get(day, 0)
            written.added |= {f: 0 for p in batch.plans if p.day in merged for f in (x.path for x in p.new)}
            written.added |= outcome.inserted_by_file
            outcome.release()
        return written

    @_timed
    def write_ledger(self, batch: Batch, read: Read, written: Written) -> None:
        delta, run_id, report = self.delta, self.context.run_id, read.staged.report
        rebuilt, replaced, merged = batch.rebuilt, batch.replaced, batch.merged
        ledger_frame = ledger.ledger_rows(
            self.session,
            batch.plans,
            {
                path: (acc.raw_rows, acc.quarantined_rows, written.added.get(path, 0), acc.device_min, acc.device_max)
                for path, acc in read.per_file.items()
            },
            batch.id,
            run_id,
            self.now,
            refused=report.refused_files,
            vanished=set(report.vanished_files),
        )
        if delta.exists(LEDGER_TABLE):
            delta.add_columns(LEDGER_TABLE, ledger.LEDGER_SCHEMA)  # a ledger written before `outcome` or the device range
        if rebuilt:
            entries = ledger_frame.where(F.col("landing_date").isin(rebuilt))
            delta.replace_partitions(entries, LEDGER_TABLE, {"landing_date": rebuilt}, run_id=run_id)
        if replaced:
            entries, replaced_books = replacing.ledger_for_days(
                delta,
                self.session,
                batch.plans,
                read.per_file,
                written.replacement,
                written.readmitted_replaced,
                batch.id,
                run_id,
                self.now,
                report.refused_files,
                set(report.vanished_files),
            )
            for day, b in replaced_books.items():
                read.books[day].clean_rows, read.books[day].duplicates_dropped = b.clean_rows, b.duplicates_dropped
            _once(
                delta,
                LEDGER_TABLE,
                batch.id,
                replacing.LEDGER_STEP,
                lambda b: delta.replace_partitions(entries, LEDGER_TABLE, {"landing_date": replaced}, run_id=run_id, batch=b),
            )
        if merged:
            _once(
                delta,
                LEDGER_TABLE,
                batch.id,
                "ledger-append",
                lambda b: delta.replace_partitions(
                    ledger_frame.where(F.col("landing_date").isin(merged)),
                    LEDGER_TABLE,
                    {"landing_date": merged},
                    rows_of={"source_file": written.merged_files},
                    run_id=run_id,
                    batch=b,
                ),
            )

    def result(self, batch: Batch, read: Read, written: Written) -> dg.MaterializeResult:
        delta, days, plans, report = self.delta, self.days, batch.plans, read.staged.report
        if delta.exists(CLEAN_TABLE):
            delta.set_properties(CLEAN_TABLE, CLEAN_TABLE_PROPERTIES)  # a table written before they were set
        # Quarantine verdicts that depend on the registry or the clock, judged again with this run's.
        started = time.monotonic()
        rejudged = rejudgement.rejudge(delta, days, self.registry, self.now, self.context.run_id, self.inputs)
        self.step_seconds["rejudge"] = round(time.monotonic() - started, 2)
        started = time.monotonic()
        day_books, newest_by_site = _day_books(delta, days, self.registry)
        fleet_newest = max((b.latest_ts for b in day_books.values() if b.latest_ts), default=None)
        lagging = _lagging_sites(self.registry, self.fs, days, newest_by_site, fleet_newest)
        self.step_seconds["day_books"] = round(time.monotonic() - started, 2)
        totals = _totals(read.books)
        # A file rewritten between its footer and its read, say: the run that read it says so, blocking.
        read_in_part = {
            f.path: ReadInPart(p.day, read.per_file[f.path].raw_rows if f.path in read.per_file else 0, promised)
            for p in plans
            for f in p.cleaned
            if (promised := report.footer_rows.get(f.path)) is not None
            and (read.per_file[f.path].raw_rows if f.path in read.per_file else 0) < promised
        }
        clean_write = next((w for w in reversed(written.writes) if w.table == CLEAN_TABLE), None)
        judged = Judged.of(days, self.context.run_id)
        replacement = written.replacement
        return dg.MaterializeResult(
            metadata=(clean_write.metadata() if clean_write else {})
            | {
                "mode": dg.MetadataValue.json({p.day: ("rebuild: " if p.rebuild else "") + p.why for p in plans}),
                "files_read": sum(len(p.cleaned) for p in plans),
                "files_already_cleaned": sum(len(p.files) - len(p.cleaned) for p in plans),
                # Cleaned files read again for the keys of rewritten or vanished ones, and why each.
                "files_reread": dg.MetadataValue.json(batch.rereads),
                "rewritten_files": dg.MetadataValue.json(sorted(f.path for p in plans for f in p.rewritten)),
                "keys_replaced": dg.MetadataValue.json(replacement.metadata()),
                # Cleaned files gone from the landing zone: the clean rows their days lost with them.
                "vanished_cleaned_files": dg.MetadataValue.json({v: replacement.lost_by_file.get(v, 0) for p in plans for v in p.vanished}),
                "clean_rows_lost_to_vanished_files": sum(replacement.lost_by_file.values()),
                "raw_rows": totals.raw_rows,
                "clean_rows_added": totals.clean_rows,
                "quarantined_rows": totals.quarantined_rows,
                "duplicates_dropped": totals.duplicates_dropped,
                "conflicting_duplicates": totals.conflicting_duplicates,
                "quarantined_by_reason": dg.MetadataValue.json(totals.quarantined_by_reason),
                "flagged_values_by_sensor": dg.MetadataValue.json(totals.flagged_values),
                "accounting": _books_table(read.books),
                "unreadable_files": dg.MetadataValue.json(report.unreadable_files),
                "over_limit_files": dg.MetadataValue.json(report.over_limit_files),
                "schema_mismatch_files": dg.MetadataValue.json(report.schema_mismatch_files),
                "extra_columns": dg.MetadataValue.json(report.extra_columns),
                "missing_sensor_columns": dg.MetadataValue.json(report.missing_columns),
                "empty_files": dg.MetadataValue.json(report.empty_files),
                "vanished_files": dg.MetadataValue.json(report.vanished_files),
                "readmitted_files": dg.MetadataValue.json(sorted(f.path for p in plans for f in p.readmitted)),
                "ignored_files": dg.MetadataValue.json(batch.ignored),
                "batch_id": batch.id,
                **rejudged.metadata(),
                latest_key("ts"): latest_value(fleet_newest),
                site_clock.LAGGING_SITES_KEY: dg.MetadataValue.json(lagging),
                "seconds": round(time.monotonic() - self.started, 2),
                # Where the run's time went: each step above, the quarantine judged again, the books and sites.
                "step_seconds": dg.MetadataValue.json(self.step_seconds),
            },
            check_results=[
                evaluate_accounting(read.books, day_books, judged, read_in_part),
                evaluate_schema_drift(report.extra_columns, report.missing_columns, judged),
            ],
        )


def _books_table(books: dict[str, cleaning.PartitionAccounting]) -> dg.MetadataValue:
    return table_metadata(
        [
            {
                "partition": p,
                "raw": b.raw_rows,
                "clean_added": b.clean_rows,
                "quarantined": b.quarantined_rows,
                "exact_duplicates": b.exact_duplicates,
                "conflicting_duplicates": b.conflicting_duplicates,
                "flagged_values": sum(b.flagged_values.values()),
            }
            for p, b in sorted(books.items())
        ]
    )


def _once(delta: DeltaTables, table: str, batch: str, step: str, write) -> DeltaWrite:
    """Apply one write of the batch unless a run of the same batch, cut short, already committed it."""
    tag = f"{batch}-{step}"
    return delta.batch_commit(table, tag) or write(tag)


def _merge(delta: DeltaTables, rows, days: list[str], batch: str, run_id: str, inputs: dict[str, int]):
    tag = f"{batch}-{incremental.MERGE_STEP}"
    done = delta.batch_commit(CLEAN_TABLE, tag)
    # Sorted against the table as it was before this batch, or before a batch cut short that this one
    # resumes with other files: a resumed batch reports what it did then.
    cut_short = [v for v in (done.version if done else None, incremental.unfinished_merge(delta)) if v is not None]
    held = delta.read(CLEAN_TABLE, version=min(cut_short) - 1) if cut_short else delta.read(CLEAN_TABLE)
    outcome = incremental.against_held(rows, held, days)
    if done:
        return done, outcome
    if outcome.ts_range is None:
        return DeltaWrite(CLEAN_TABLE, delta.path(CLEAN_TABLE), delta.version(CLEAN_TABLE) or 0, 0, ()), outcome
    return incremental.merge_into_clean(delta, outcome, days, run_id, inputs, tag), outcome


def _by_device_slice(rows, registry):
    """`rows` shuffled so that each task, and so each file of a day, holds one slice of the registry's
    devices in `device_id` order: a landing file rewritten later costs the MERGE only the files whose
    `device_id` statistics hold its devices.

    The slices are cut from the pinned registry (every kept row's device is in it), so the shuffle
    needs no sampling pass: `repartitionByRange` evaluated the whole batch once more to find its
    bounds. Measured on a 10,000-device day (write step, warm): by range 42-48 s, by registry slice
    34-37 s, unordered 24-25 s."""
    partitions = int(rows.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    slices = (
        registry.select("device_id")
        .distinct()
        .select("device_id", (F.ntile(partitions).over(Window.orderBy("device_id")) - 1).alias("_slice"))
    )
    return rows.join(F.broadcast(slices), "device_id", "left").repartitionById(partitions, "_slice").select(*rows.columns)


def _days_with_rows(delta: DeltaTables, days: list[str]) -> set[str]:
    if not days or not delta.exists(CLEAN_TABLE):
        return set()
    held = delta.read(CLEAN_TABLE).where(F.col("reading_date").isin(days)).select("reading_date").distinct().collect()
    return {r["reading_date"].isoformat() for r in held}


def _day_books(delta: DeltaTables, days: list[str], registry) -> tuple[dict[str, DayBooks], dict[str, datetime]]:
    """Each day's books from the ledger, set against the rows the tables hold for it, and each site's
    newest reading over the days."""
    books = {d: DayBooks(d) for d in days}
    if delta.exists(LEDGER_TABLE):
        sums = (
            delta.read(LEDGER_TABLE)
            .where(F.col("landing_date").isin(days))
            .groupBy("landing_date")
            .agg(*[F.sum(c).alias(c) for c in ("raw_rows", "quarantined_rows", "clean_rows_added", "duplicates_dropped")])
            .collect()
        )
        for r in sums:
            b = books[r["landing_date"].isoformat()]
            b.raw_rows, b.quarantined_rows, b.clean_rows_added, b.duplicates_dropped = (
                r["raw_rows"],
                r["quarantined_rows"],
                r["clean_rows_added"],
                r["duplicates_dropped"],
            )
    newest_by_site: dict[str, datetime] = {}
    if delta.exists(CLEAN_TABLE):
        # Counted by site in the same pass: each site's newest reading is the clock of its gateway.
        held = delta.read(CLEAN_TABLE).where(F.col("reading_date").isin(days))
        by_site = held.join(F.broadcast(registry.select("device_id", "site_id")), "device_id", "left")
        for r in by_site.groupBy("reading_date", "site_id").agg(F.count(F.lit(1)).alias("count"), F.max("ts").alias("latest")).collect():
            b = books[r["reading_date"].isoformat()]
            b.clean_in_table += r["count"]
            b.latest_ts = max(filter(None, (b.latest_ts, r["latest"])), default=None)
            if r["site_id"] is not None and r["latest"] is not None:
                newest_by_site[r["site_id"]] = max(r["latest"], newest_by_site.get(r["site_id"], r["latest"]))
    rejudgement.count_quarantine(delta, books)
    return books, newest_by_site


def _lagging_sites(
    registry, fs: FileSystem, days: list[str], newest_by_site: dict[str, datetime], fleet_newest: datetime | None
) -> dict[str, str]:
    """The sites behind the fleet's newest reading (`site_clock`), from the registry and the silences declared."""
    if fleet_newest is None:
        return {}
    day = fleet_newest.date().isoformat()
    try:
        excused = site_clock.excused_devices(read_expected_gaps(day, fs), fleet_newest)
    except ExpectedGapsError:
        excused = set()  # an unreadable declaration excuses nothing (the coverage check names it)
    expected = [r[0] for r in site_clock.expected_sites(registry, max(days), excused).collect()]
    return site_clock.lagging_sites(newest_by_site, expected, fleet_newest)


def _totals(books: dict[str, cleaning.PartitionAccounting]) -> cleaning.PartitionAccounting:
    totals = cleaning.PartitionAccounting(partition="all")
    for b in books.values():
        totals.raw_rows += b.raw_rows
        totals.clean_rows += b.clean_rows
        totals.quarantined_rows += b.quarantined_rows
        totals.duplicates_dropped += b.duplicates_dropped
        totals.conflicting_duplicates += b.conflicting_duplicates
        for reason, n in b.quarantined_by_reason.items():
            totals.quarantined_by_reason[reason] = totals.quarantined_by_reason.get(reason, 0) + n
        for sensor, n in b.flagged_values.items():
            totals.flagged_values[sensor] = totals.flagged_values.get(sensor, 0) + n
    return totals


def _refuse_shrinking(delta: DeltaTables, new_rows: dict[str, int]) -> None:
    """Fail before writing when a rebuilt day would keep less than `MIN_KEPT_SHARE` of the clean rows
    it holds: a landing folder that vanished must not overwrite its day with nothing."""
    if not delta.exists(CLEAN_TABLE):
        return
    held = {
        r["reading_date"].isoformat(): r["count"]
        for r in delta.read(CLEAN_TABLE).where(F.col("reading_date").isin(list(new_rows))).groupBy("reading_date").count().collect()
    }
    shrinking = {day: (held[day], n) for day, n in new_rows.items() if held.get(day, 0) and n < held[day] * MIN_KEPT_SHARE}
    refuse_shrinking(shrinking, "replace clean readings")
