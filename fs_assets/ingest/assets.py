"""Ingest assets: the landing zone (observed), the device registry and clean sensor readings."""

import time
from collections import Counter
from datetime import UTC, datetime

import dagster as dg
from pydantic import Field
from pyspark import StorageLevel
from pyspark.sql import functions as F

from fs_assets.freshness import freshness_policy
from fs_assets.ingest import cleaning, incremental, landing, ledger, read_failures, rejudgement, site_clock
from fs_assets.ingest import replaced_files as replacing
from fs_assets.ingest.accounting import (
    DayBooks,
    Judged,
    ReadInPart,
    accounting_check_spec,
    evaluate_accounting,
    evaluate_schema_drift,
    schema_drift_check_spec,
)
from fs_assets.ingest.cleaning import CLEAN_COLUMNS
from fs_assets.ingest.expected_gaps import ExpectedGapsError, read_expected_gaps
from fs_assets.ingest.maintenance import MaintenanceError, read_maintenance
from fs_assets.ingest.read_failures import ReadPolicy
from fs_assets.ingest.registry import RegistryError, read_registry
from fs_assets.metadata import latest_key, latest_value, table_metadata
from fs_assets.partitions import daily_backfill_policy, daily_partitions
from fs_domain import slas
from fs_domain.contract import MAINTENANCE_COLUMNS, MIN_KEPT_SHARE, REGISTRY_COLUMNS, SENSORS, FileLimits
from fs_domain.tables import CLEAN_TABLE, LEDGER_TABLE, MAINTENANCE_TABLE, QUARANTINE_TABLE, REGISTRY_TABLE
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

# One pool per Delta table (limit 1, dagster_home/dagster.yaml): two runs never write a table at once.
REGISTRY_POOL = f"delta_{REGISTRY_TABLE}"
CLEAN_POOL = f"delta_{CLEAN_TABLE}"


class IngestConfig(dg.Config):
    allow_shrink: bool = Field(
        default=False,
        description="Let this run replace a day of clean readings, or the registry, with less than half the rows it holds "
        "(a landing folder emptied on purpose, a fleet decommissioned in bulk). Off: such a run is refused before it writes.",
    )
    rebuild: bool = Field(
        default=False,
        description="Clean every landing file of the run's days again and replace the days whole, instead of cleaning only the files "
        "the ledger has not seen.",
    )
    max_file_bytes: int = Field(
        default=FileLimits().max_bytes, gt=0, description="A landing file larger than this is quarantined whole, unread."
    )
    max_file_rows: int = Field(
        default=FileLimits().max_rows, gt=0, description="A Parquet file whose footer promises more rows is quarantined whole, unread."
    )
    max_line_chars: int = Field(
        default=FileLimits().max_line_chars,
        gt=0,
        description="A CSV header longer than this quarantines its file; a longer value quarantines its row.",
    )
    read_attempts: int = Field(
        default=ReadPolicy().attempts,
        ge=1,
        description="Reads of a landing file that fails in a way that may pass (a storage or network error, a file briefly "
        "absent or still changing) before the run fails; the file is not judged on such a failure, the next run reads it again.",
    )
    read_backoff_seconds: float = Field(
        default=ReadPolicy().backoff_seconds, ge=0, description="Pause after the first failed read; doubles after each."
    )

    def limits(self) -> FileLimits:
        return FileLimits(max_bytes=self.max_file_bytes, max_rows=self.max_file_rows, max_line_chars=self.max_line_chars)

    def read_policy(self) -> ReadPolicy:
        return ReadPolicy(attempts=self.read_attempts, backoff_seconds=self.read_backoff_seconds)


@dg.observable_source_asset(
    key="raw_sensor_readings",
    group_name="ingest",
    description="Landing-zone files (landing/date=YYYY-MM-DD/*.parquet|csv|jsonl), written by the fleet's gateways.",
    auto_observe_interval_minutes=5,
    metadata={"landing_root": "FS_DATA_ROOT/landing", "formats": "parquet, csv, jsonl"},
)
def raw_sensor_readings() -> dg.ObserveResult:
    root = settings.landing_root()
    fs = filesystem_for(root)
    days = landing.landing_partition_keys(fs, root)
    files = {day: landing.list_landing_files(fs, root, day) for day in days}
    all_files = [f for fs in files.values() for f in fs]
    latest = max((f.mtime_ns for f in all_files), default=0)
    return dg.ObserveResult(
        data_version=dg.DataVersion(landing.fingerprint(all_files)),
        metadata={
            "landing_root": dg.MetadataValue.path(root),
            "partitions": len(days),
            "files": len(all_files),
            "bytes": sum(f.size for f in all_files),
            "latest_partition": days[-1] if days else "none",
            "latest_file_at": datetime.fromtimestamp(latest / 1e9, tz=UTC).isoformat() if latest else "none",
        },
    )


@dg.asset(
    group_name="ingest",
    kinds={"spark", "delta"},
    pool=REGISTRY_POOL,
    description="The device registry (landing/registry/devices.csv): one row per device with site, model, refrigerant, install date and status.",
    metadata={
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(c, "date" if c == "install_date" else "string") for c in REGISTRY_COLUMNS]
        )
    },
)
def device_registry(context: dg.AssetExecutionContext, config: IngestConfig, delta: DeltaTables) -> dg.MaterializeResult:
    path = settings.registry_csv_path()
    try:
        read = read_registry(path, filesystem_for(path, delta.session))
    except RegistryError as exc:
        raise dg.Failure(description=str(exc)) from exc
    if len(read.rejected):
        context.log.warning(f"{len(read.rejected)} registry rows rejected; see the `rejected_rows` metadata")
    if delta.exists(REGISTRY_TABLE) and not config.allow_shrink:
        # A half-written or truncated registry file would send the missing devices' readings to quarantine.
        held = delta.read(REGISTRY_TABLE).count()
        if held and len(read.devices) < held * MIN_KEPT_SHARE:
            raise dg.Failure(
                description=f"the registry file lists {len(read.devices):,} valid devices where the table holds {held:,} "
                f"(less than {MIN_KEPT_SHARE:.0%}): refused, the file may be half-written. Re-run once it is complete, "
                "or with run config `allow_shrink: true` if the fleet really shrank."
            )
    session = delta.session
    write = delta.overwrite(session.createDataFrame(read.devices), REGISTRY_TABLE, run_id=context.run_id)
    status = Counter(read.devices["status"])
    # The landing sensor requests a clean run of each, which re-admits the readings (`rejudgement`).
    rejudge = rejudgement.days_with_readmittable_devices(delta, delta.read(REGISTRY_TABLE, version=write.version))
    return dg.MaterializeResult(
        metadata=write.metadata()
        | {
            rejudgement.DAYS_TO_REJUDGE_KEY: dg.MetadataValue.json(rejudge),
            "source": dg.MetadataValue.path(path),
            "devices": len(read.devices),
            "active_devices": status.get("active", 0),
            "devices_by_status": dg.MetadataValue.json(dict(status)),
            "rejected_rows": dg.MetadataValue.json(read.rejected.head(50).to_dict(orient="records")),
        }
    )


@dg.asset(
    group_name="ingest",
    kinds={"spark", "delta"},
    pool=f"delta_{MAINTENANCE_TABLE}",
    description="Maintenance events (landing/maintenance/events.csv): failures, services and fault onsets, the labels of training sets.",
    metadata={
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(c, "timestamp" if c == "event_time" else "string") for c in MAINTENANCE_COLUMNS]
        )
    },
)
def maintenance_events(context: dg.AssetExecutionContext, delta: DeltaTables) -> dg.MaterializeResult:
    path = settings.maintenance_csv_path()
    try:
        read = read_maintenance(path, filesystem_for(path, delta.session))
    except MaintenanceError as exc:
        raise dg.Failure(description=str(exc)) from exc
    if len(read.rejected):
        context.log.warning(f"{len(read.rejected)} maintenance rows rejected; see the `rejected_rows` metadata")
    session = delta.session
    schema = "device_id string, event_time timestamp, event_type string, component string, description string"
    records = [
        (r.device_id, r.event_time.to_pydatetime(), r.event_type, r.component, r.description) for r in read.events.itertuples(index=False)
    ]
    write = delta.overwrite(session.createDataFrame(records, schema), MAINTENANCE_TABLE, run_id=context.run_id)
    return dg.MaterializeResult(
        metadata=write.metadata()
        | {
            "source": dg.MetadataValue.path(path),
            "events": len(read.events),
            "events_by_type": dg.MetadataValue.json(dict(Counter(read.events["event_type"]))),
            "devices": int(read.events["device_id"].nunique()),
            "rejected_rows": dg.MetadataValue.json(read.rejected.head(50).to_dict(orient="records")),
        }
    )


CLEAN_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("device_id", "string", description="Registered device id"),
        dg.TableColumn("ts", "timestamp", description="Reading time, UTC"),
        *[
            dg.TableColumn(
                s.name, "double", description=f"{s.description} ({s.unit}); NULL when missing or flagged, valid range [{s.low}, {s.high}]"
            )
            for s in SENSORS
        ],
        dg.TableColumn(
            "quality_flags", "array<string>", description="Why a value became NULL: `{sensor}:out_of_range|non_finite|unparseable`"
        ),
        dg.TableColumn("source_file", "string", description="Landing file the kept reading came from"),
        dg.TableColumn("ingested_at", "timestamp", description="When that file landed (its modification time)"),
        dg.TableColumn("reading_date", "date", description="Partition: UTC date of ts"),
    ]
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


@dg.asset(
    group_name="ingest",
    kinds={"spark", "delta"},
    partitions_def=daily_partitions,
    backfill_policy=daily_backfill_policy,
    deps=[raw_sensor_readings, device_registry],
    check_specs=[accounting_check_spec, schema_drift_check_spec],
    pool=CLEAN_POOL,
    freshness_policy=freshness_policy(slas.CLEAN_READINGS),
    description=(
        "Validated, deduplicated sensor readings, one row per (device_id, ts), partitioned by UTC date. "
        "Each run cleans only the landing files the ledger has not seen and merges them into their day "
        "(latest ingested wins); rows that cannot be kept go to the clean_sensor_readings_quarantine table with a reason code."
    ),
    metadata={"dagster/column_schema": CLEAN_SCHEMA, "quarantine_table": QUARANTINE_TABLE, "ledger_table": LEDGER_TABLE},
)
def clean_sensor_readings(context: dg.AssetExecutionContext, config: IngestConfig, delta: DeltaTables) -> dg.MaterializeResult:
    started = time.monotonic()
    run_started = datetime.now(UTC)  # no landing file is taken as ingested later than this (a clock ahead)
    days = list(context.partition_keys)
    session = delta.session
    try:
        registry, registry_version = delta.read_pinned(REGISTRY_TABLE)
    except DeltaTableMissing as exc:
        raise dg.Failure(description=f"{exc} (asset: device_registry)") from exc

    root = settings.landing_root()
    fs = filesystem_for(root, session)
    listed = {day: landing.list_landing_files(fs, root, day) for day in days}
    ignored = [path for day in days for path in landing.ignored_files(fs, root, day)]
    if ignored:
        context.log.warning(f"{len(ignored)} landing entries are not .parquet, .csv or .jsonl files and were not read: {ignored[:10]}")
    known = ledger.read_ledger(delta.read(LEDGER_TABLE), days) if delta.exists(LEDGER_TABLE) else {}
    plans = ledger.plan(days, listed, known, _days_with_rows(delta, [d for d in days if d not in known]), config.rebuild)
    rebuilt = [p.day for p in plans if p.rebuild]
    replaced = [p.day for p in plans if p.replaces_keys]
    merged = [p.day for p in plans if not p.rebuild and p.new and not p.replaces_keys]
    batch = ledger.batch_id(plans)
    held_version = replacing.held_version(delta, batch) if replaced else None
    rereads = replacing.choose_rereads(delta, session, plans, known, held_version) if replaced else {}
    for p in plans:
        context.log.info(f"{p.day}: {'rebuild from' if p.rebuild else 'incremental,'} {len(p.to_read)} file(s) to read ({p.why})")

    to_read = {p.day: p.to_read for p in plans if p.to_read}
    policy, limits = config.read_policy(), config.limits()
    try:
        # Footers and header lines first: they size the read below.
        staged = landing.read_landing(session, fs, to_read, limits, policy=policy, log=context.log.warning, started=run_started)
    except read_failures.ReadStillFailing as exc:
        raise dg.Failure(description=str(exc)) from exc
    now = datetime.now(UTC)
    inputs = {REGISTRY_TABLE: registry_version}
    footer_rows = staged.report.footer_rows
    parquet_bytes = sum(f.size for p in plans for f in p.to_read if f.path in footer_rows)
    estimated = sum(footer_rows.values()) + sum(f.size // 100 for p in plans for f in p.to_read if f.path not in footer_rows)
    bytes_per_row = parquet_bytes / max(1, sum(footer_rows.values())) if footer_rows else 100.0
    with (
        file_splits_for(session, bytes_per_row),
        shuffle_partitions_for(session, estimated) as partitions,
        cache_uncompressed_up_to(session, estimated),
    ):
        if partitions > 4:
            context.log.info(f"about {estimated:,} raw rows: {partitions} shuffle partitions")
        read_for: set[str] = set()
        reread_paths = {f.path for p in plans for f in p.reread}

        def read(refused: dict[str, read_failures.Refusal]):
            # Spark reads every file here (the first action on `judged`): a failure naming a file refuses
            # it and the others are read again, or the whole read is retried while the failure may pass.
            nonlocal staged, read_for
            if set(refused) != read_for:
                staged = landing.read_landing(
                    session, fs, to_read, limits, refused=refused, policy=policy, log=context.log.warning, started=run_started
                )
                read_for = set(refused)
            judged = cleaning.judged(staged.rows, registry, now).persist(StorageLevel.MEMORY_AND_DISK)
            deduplicated = None
            try:
                deduplicated = cleaning.deduplicate(cleaning.kept_readings(judged), staged.with_paths)
                # Files read again only for the keys of rewritten ones were accounted for when they were cleaned.
                own = ~F.col("file_id").isin([i for i, path in staged.paths.items() if path in reread_paths])
                books, per_file = cleaning.accounting(
                    judged.where(own), deduplicated.contested.where(own), [p.day for p in plans], staged.paths
                )
            except BaseException:
                if deduplicated is not None:
                    deduplicated.release()
                judged.unpersist()
                raise
            return judged, deduplicated, books, per_file

        try:
            (judged, deduplicated, books, per_file), _ = read_failures.settle(
                read,
                [f for files in to_read.values() for f in files],
                fs,
                lambda f: landing.read_alone(session, f),
                policy,
                context.log.warning,
            )
        except read_failures.ReadStillFailing as exc:
            raise dg.Failure(description=str(exc)) from exc
        if rebuilt and not config.allow_shrink:
            _refuse_shrinking(delta, {day: books[day].clean_rows for day in rebuilt})
        kept_by_file = {path: acc.kept_rows for path, acc in per_file.items()}
        quarantine = cleaning.quarantine_rows(judged, staged.with_paths, now)
        kept = deduplicated.rows.select(*CLEAN_COLUMNS, "landing_date")
        rejudgement.prepare_quarantine(delta)
        writes = []
        if rebuilt:
            # Replacing whole days is idempotent: a re-run of a rebuild simply writes them again.
            rebuilt_rows = F.col("landing_date").isin(rebuilt)
            q = quarantine.where(rebuilt_rows)
            writes.append(delta.replace_partitions(q, QUARANTINE_TABLE, {"landing_date": rebuilt}, run_id=context.run_id, inputs=inputs))
            # Files by device range (a day's files each hold a slice of its devices): a landing file
            # rewritten later costs the MERGE only the files whose `device_id` statistics hold its devices.
            c = kept.where(rebuilt_rows).select(*CLEAN_COLUMNS).repartitionByRange("reading_date", "device_id")
            writes.append(
                delta.replace_partitions(
                    c, CLEAN_TABLE, {"reading_date": rebuilt}, run_id=context.run_id, inputs=inputs, properties=CLEAN_TABLE_PROPERTIES
                )
            )
        # A merged day's quarantine and ledger rows are replaced file by file: a refused file read
        # again loses its old record, and a file read twice is never counted twice. A file gone loses
        # its records; a file read again only for its keys keeps them.
        merged_files = sorted(f.path for p in plans if p.day in merged for f in p.new)
        recorded = sorted(f.path for p in plans if p.day in merged + replaced for f in p.new)
        replaced_files = sorted({*recorded, *(path for p in plans if p.day in replaced for path in p.vanished)})
        readmitted_replaced = replacing.readmitted_replaced(delta, plans, f"{batch}-quarantine-append")
        if merged or replaced:
            writes.append(
                _once(
                    delta,
                    QUARANTINE_TABLE,
                    batch,
                    "quarantine-append",
                    lambda b: delta.replace_partitions(
                        quarantine.where(F.col("landing_date").isin(merged + replaced) & F.col("source_file").isin(recorded)),
                        QUARANTINE_TABLE,
                        {"landing_date": merged + replaced},
                        rows_of={"source_file": replaced_files},
                        run_id=context.run_id,
                        batch=b,
                    ),
                )
            )
        replacement = replacing.KeyReplacement()
        if replaced:
            replacement = replacing.replace_keys(
                delta, kept, plans, held_version, batch, context.run_id, inputs, config.allow_shrink, known
            )
            if replacement.write is not None:
                writes.append(replacement.write)
        if merged:
            merge_write, outcome = _merge(delta, kept.where(F.col("landing_date").isin(merged)), merged, batch, context.run_id, inputs)
            writes.append(merge_write)
            for day in merged:
                b = books[day]
                within = b.duplicates_dropped
                b.clean_rows = outcome.inserted_by_day.get(day, 0)
                b.duplicates_dropped = within + outcome.replaced_by_day.get(day, 0) + outcome.lost_by_day.get(day, 0)
                b.conflicting_duplicates += outcome.conflicting_by_day.get(day, 0)
            added = {
                **kept_by_file,
                **{f: 0 for p in plans if p.day in merged for f in (x.path for x in p.new)},
                **outcome.inserted_by_file,
            }
            outcome.release()
        else:
            added = kept_by_file
        deduplicated.release()
        judged.unpersist()

    ledger_frame = ledger.ledger_rows(
        session,
        plans,
        {path: (acc.raw_rows, acc.quarantined_rows, added.get(path, 0), acc.device_min, acc.device_max) for path, acc in per_file.items()},
        batch,
        context.run_id,
        now,
        refused=staged.report.refused_files,
        vanished=set(staged.report.vanished_files),
    )
    if delta.exists(LEDGER_TABLE):
        delta.add_columns(LEDGER_TABLE, ledger.LEDGER_SCHEMA)  # a ledger written before `outcome` or the device range
    if rebuilt:
        entries = ledger_frame.where(F.col("landing_date").isin(rebuilt))
        delta.replace_partitions(entries, LEDGER_TABLE, {"landing_date": rebuilt}, run_id=context.run_id)
    if replaced:
        entries, replaced_books = replacing.ledger_for_days(
            delta,
            session,
            plans,
            per_file,
            replacement,
            readmitted_replaced,
            batch,
            context.run_id,
            now,
            staged.report.refused_files,
            set(staged.report.vanished_files),
        )
        for day, b in replaced_books.items():
            books[day].clean_rows, books[day].duplicates_dropped = b.clean_rows, b.duplicates_dropped
        _once(
            delta,
            LEDGER_TABLE,
            batch,
            replacing.LEDGER_STEP,
            lambda b: delta.replace_partitions(entries, LEDGER_TABLE, {"landing_date": replaced}, run_id=context.run_id, batch=b),
        )
    if merged:
        _once(
            delta,
            LEDGER_TABLE,
            batch,
            "ledger-append",
            lambda b: delta.replace_partitions(
                ledger_frame.where(F.col("landing_date").isin(merged)),
                LEDGER_TABLE,
                {"landing_date": merged},
                rows_of={"source_file": merged_files},
                run_id=context.run_id,
                batch=b,
            ),
        )

    if delta.exists(CLEAN_TABLE):
        delta.set_properties(CLEAN_TABLE, CLEAN_TABLE_PROPERTIES)  # a table written before they were set
    # Quarantine verdicts that depend on the registry or the clock, judged again with this run's.
    rejudged = rejudgement.rejudge(delta, days, registry, now, context.run_id, inputs)
    day_books, newest_by_site = _day_books(delta, days, registry)
    fleet_newest = max((b.latest_ts for b in day_books.values() if b.latest_ts), default=None)
    totals = _totals(books)
    # A file rewritten between its footer and its read, say: the run that read it says so, blocking.
    read_in_part = {
        f.path: ReadInPart(p.day, per_file[f.path].raw_rows if f.path in per_file else 0, promised)
        for p in plans
        for f in p.cleaned
        if (promised := staged.report.footer_rows.get(f.path)) is not None
        and (per_file[f.path].raw_rows if f.path in per_file else 0) < promised
    }
    clean_write = next((w for w in reversed(writes) if w.table == CLEAN_TABLE), None)
    judged = Judged.of(days, context.run_id)
    return dg.MaterializeResult(
        metadata=(clean_write.metadata() if clean_write else {})
        | {
            "mode": dg.MetadataValue.json({p.day: ("rebuild: " if p.rebuild else "") + p.why for p in plans}),
            "files_read": sum(len(p.cleaned) for p in plans),
            "files_already_cleaned": sum(len(p.files) - len(p.cleaned) for p in plans),
            # Cleaned files read again for the keys of rewritten or vanished ones, and why each.
            "files_reread": dg.MetadataValue.json(rereads),
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
            "accounting": _books_table(books),
            "unreadable_files": dg.MetadataValue.json(staged.report.unreadable_files),
            "over_limit_files": dg.MetadataValue.json(staged.report.over_limit_files),
            "schema_mismatch_files": dg.MetadataValue.json(staged.report.schema_mismatch_files),
            "extra_columns": dg.MetadataValue.json(staged.report.extra_columns),
            "missing_sensor_columns": dg.MetadataValue.json(staged.report.missing_columns),
            "empty_files": dg.MetadataValue.json(staged.report.empty_files),
            "vanished_files": dg.MetadataValue.json(staged.report.vanished_files),
            "readmitted_files": dg.MetadataValue.json(sorted(f.path for p in plans for f in p.readmitted)),
            "ignored_files": dg.MetadataValue.json(ignored),
            "batch_id": batch,
            **rejudged.metadata(),
            latest_key("ts"): latest_value(fleet_newest),
            site_clock.LAGGING_SITES_KEY: dg.MetadataValue.json(_lagging_sites(registry, fs, days, newest_by_site, fleet_newest)),
            "seconds": round(time.monotonic() - started, 2),
        },
        check_results=[
            evaluate_accounting(books, day_books, judged, read_in_part),
            evaluate_schema_drift(staged.report.extra_columns, staged.report.missing_columns, judged),
        ],
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
    if shrinking:
        detail = ", ".join(f"{day}: {was:,} -> {now:,} rows" for day, (was, now) in sorted(shrinking.items()))
        raise dg.Failure(
            description=f"refused to replace clean readings with far fewer rows ({detail}): are that day's landing files gone? "
            f"Nothing was written. Restore the files, or re-run with run config `allow_shrink: true` to replace the day anyway.",
            metadata={"shrinking_days": dg.MetadataValue.json(sorted(shrinking))},
        )
