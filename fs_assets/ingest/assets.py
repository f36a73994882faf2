"""Ingest assets: the landing zone (observed), the device registry and clean sensor readings."""

from collections import Counter
from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from fs_assets.freshness import freshness_policy
from fs_assets.ingest import landing, rejudgement
from fs_assets.ingest.accounting import (
    accounting_check_spec,
    schema_drift_check_spec,
)
from fs_assets.ingest.clean_run import CleanRun
from fs_assets.ingest.maintenance import MaintenanceError, read_maintenance
from fs_assets.ingest.read_failures import ReadPolicy
from fs_assets.ingest.registry import RegistryError, read_registry
from fs_assets.partitions import daily_backfill_policy, daily_partitions
from fs_domain import slas
from fs_domain.contract import MAINTENANCE_COLUMNS, MIN_KEPT_SHARE, REGISTRY_COLUMNS, SENSORS, FileLimits
from fs_domain.tables import CLEAN_TABLE, LEDGER_TABLE, MAINTENANCE_TABLE, QUARANTINE_TABLE, REGISTRY_TABLE
from fs_resources import settings
from fs_resources.delta import DeltaTables
from fs_resources.filesystem import filesystem_for

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
    # The steps are `fs_assets.ingest.clean_run`'s, in this order.
    run = CleanRun(context, config, delta)
    batch = run.plan()
    staged = run.stage(batch)
    with run.sized_for(batch, staged):
        read = run.read(batch, staged)
        written = run.write_rows(batch, read)
        read.release()
    run.write_ledger(batch, read, written)
    return run.result(batch, read, written)
