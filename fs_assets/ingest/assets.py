"""Ingest assets: the landing zone (observed), the device registry and clean sensor readings."""

import shutil
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from pydantic import Field
from pyspark import StorageLevel
from pyspark.sql import functions as F

from fs_assets.freshness import freshness_policy
from fs_assets.ingest import cleaning, landing
from fs_assets.ingest.accounting import accounting_check_spec, evaluate_accounting
from fs_assets.ingest.maintenance import MaintenanceError, read_maintenance
from fs_assets.ingest.registry import RegistryError, read_registry
from fs_assets.metadata import table_metadata
from fs_assets.partitions import daily_partitions
from fs_domain import slas
from fs_domain.contract import MAINTENANCE_COLUMNS, MIN_KEPT_SHARE, REGISTRY_COLUMNS, SENSORS
from fs_domain.tables import CLEAN_TABLE, MAINTENANCE_TABLE, QUARANTINE_TABLE, REGISTRY_TABLE
from fs_resources import settings
from fs_resources.delta import DeltaTableMissing, DeltaTables
from fs_resources.spark import shuffle_partitions_for

# One pool per Delta table (limit 1, dagster_home/dagster.yaml): two runs never write a table at once.
REGISTRY_POOL = f"delta_{REGISTRY_TABLE}"
CLEAN_POOL = f"delta_{CLEAN_TABLE}"


class IngestConfig(dg.Config):
    allow_shrink: bool = Field(
        default=False,
        description="Let this run replace a day of clean readings, or the registry, with less than half the rows it holds "
        "(a landing folder emptied on purpose, a fleet decommissioned in bulk). Off: such a run is refused before it writes.",
    )


@dg.observable_source_asset(
    key="raw_sensor_readings",
    group_name="ingest",
    description="Landing-zone files (landing/date=YYYY-MM-DD/*.parquet|csv|jsonl), written by the fleet's gateways.",
    auto_observe_interval_minutes=5,
    metadata={"landing_root": "FS_DATA_ROOT/landing", "formats": "parquet, csv, jsonl"},
)
def raw_sensor_readings() -> dg.ObserveResult:
    root = settings.landing_root()
    days = landing.landing_partition_keys(root)
    files = {day: landing.list_landing_files(root, day) for day in days}
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
        read = read_registry(path)
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
    return dg.MaterializeResult(
        metadata=write.metadata()
        | {
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
        read = read_maintenance(path)
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
                "clean": b.clean_rows,
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
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[raw_sensor_readings, device_registry],
    check_specs=[accounting_check_spec],
    pool=CLEAN_POOL,
    freshness_policy=freshness_policy(slas.CLEAN_READINGS),
    description=(
        "Validated, deduplicated sensor readings, one row per (device_id, ts), partitioned by UTC date. "
        "Rows that cannot be kept go to the clean_sensor_readings_quarantine table with a reason code."
    ),
    metadata={"dagster/column_schema": CLEAN_SCHEMA, "quarantine_table": QUARANTINE_TABLE},
)
def clean_sensor_readings(context: dg.AssetExecutionContext, config: IngestConfig, delta: DeltaTables) -> dg.MaterializeResult:
    started = time.monotonic()
    days = list(context.partition_keys)
    session = delta.session
    try:
        registry, registry_version = delta.read_pinned(REGISTRY_TABLE)
    except DeltaTableMissing as exc:
        raise dg.Failure(description=f"{exc} (asset: device_registry)") from exc

    root = settings.landing_root()
    files = {day: landing.list_landing_files(root, day) for day in days}
    ignored = [path for day in days for path in landing.ignored_files(root, day)]
    if ignored:
        context.log.warning(
            f"{len(ignored)} file(s) in the landing folders are not .parquet, .csv or .jsonl and were not read: {ignored[:10]}"
        )
    staging_parent = Path(settings.data_root()) / "_staging" if "://" not in settings.data_root() else None
    if staging_parent:
        staging_parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"clean-{context.run_id[:8]}-", dir=staging_parent))
    try:
        report = landing.stage_files(files, staging)
        context.log.info(f"staged {report.raw_rows:,} raw rows from {report.files} files for {len(days)} partition(s)")
        now = datetime.now(UTC)
        if report.raw_rows:
            staged = session.read.schema(_spark_schema()).parquet(str(staging))
        else:
            staged = session.createDataFrame([], _spark_schema())
        with shuffle_partitions_for(session, report.raw_rows) as partitions:
            if partitions > 4:
                context.log.info(f"{report.raw_rows:,} raw rows: {partitions} shuffle partitions")
            classified = cleaning.classify(staged, registry, now).persist(StorageLevel.MEMORY_AND_DISK)
            marked = cleaning.deduplicated(cleaning.parsed_readings(classified)).persist(StorageLevel.MEMORY_AND_DISK)
            books = cleaning.accounting(classified, marked, days)
            if not config.allow_shrink:
                _refuse_shrinking(delta, {day: books[day].clean_rows if day in books else 0 for day in days})
            inputs = {REGISTRY_TABLE: registry_version}
            quarantine_write = delta.replace_partitions(
                cleaning.quarantine_rows(classified, now), QUARANTINE_TABLE, {"landing_date": days}, run_id=context.run_id, inputs=inputs
            )
            clean_write = delta.replace_partitions(
                cleaning.clean_rows(marked), CLEAN_TABLE, {"reading_date": days}, run_id=context.run_id, inputs=inputs
            )
            classified.unpersist()
            marked.unpersist()
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    written = {
        r["reading_date"].isoformat(): r["count"]
        for r in delta.read(CLEAN_TABLE, version=clean_write.version)
        .where(F.col("reading_date").isin(days))
        .groupBy("reading_date")
        .count()
        .collect()
    }
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
    return dg.MaterializeResult(
        metadata=clean_write.metadata()
        | {
            "raw_rows": totals.raw_rows,
            "clean_rows": totals.clean_rows,
            "quarantined_rows": totals.quarantined_rows,
            "duplicates_dropped": totals.duplicates_dropped,
            "conflicting_duplicates": totals.conflicting_duplicates,
            "quarantined_by_reason": dg.MetadataValue.json(totals.quarantined_by_reason),
            "flagged_values_by_sensor": dg.MetadataValue.json(totals.flagged_values),
            "accounting": _books_table(books),
            "landing_files": report.files,
            "unreadable_files": dg.MetadataValue.json(report.unreadable_files),
            "schema_mismatch_files": dg.MetadataValue.json(report.schema_mismatch_files),
            "empty_files": dg.MetadataValue.json(report.empty_files),
            "ignored_files": dg.MetadataValue.json(ignored),
            "quarantine_delta_version": quarantine_write.version,
            "seconds": round(time.monotonic() - started, 2),
        },
        check_results=[evaluate_accounting(books, written)],
    )


def _refuse_shrinking(delta: DeltaTables, new_rows: dict[str, int]) -> None:
    """Fail before writing when a day would keep less than `MIN_KEPT_SHARE` of the clean rows it
    holds: a landing folder that vanished must not overwrite its day with nothing."""
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


def _spark_schema():
    from pyspark.sql import types as T

    fields = []
    for f in landing.STAGED_SCHEMA:
        if f.name == "source_row":
            fields.append(T.StructField(f.name, T.LongType()))
        elif f.name == "ingested_at":
            fields.append(T.StructField(f.name, T.TimestampType()))
        else:
            fields.append(T.StructField(f.name, T.StringType()))
    return T.StructType(fields)
