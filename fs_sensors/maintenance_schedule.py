"""`maintenance_schedule` (weekly): `table_maintenance_job` moves the expired days of clean readings and
features to the archive (FS_ARCHIVE_ROOT) and drops the other tables' days past retention, compacts
every Delta table (OPTIMIZE) and vacuums files no kept version reads. Each step reports per table
what it did (versions before and after, files and rows touched) as metadata.

Vacuum retention bounds time travel: a training set rebuilt `as_of` a time older than the
retention cannot be read any more. The default keeps 90 days (Delta's own floor is 7).
"""

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import dagster as dg
from pydantic import Field

from fs_assets.metadata import table_metadata
from fs_domain import tables
from fs_domain.run_limits import TABLE_MAINTENANCE_RUN, max_runtime_tags
from fs_resources import delta as delta_ops
from fs_resources import settings
from fs_resources.delta import DeltaTables
from fs_resources.spark import HISTORY_RETENTION_DAYS

# The one catalog of tables (`fs_domain.tables`): retention reads the dated ones, compaction and
# vacuum every one, so a table the store writes is never left out of maintenance.
DATED_TABLES = tables.dated_tables()
ARCHIVED_TABLES = tables.archived_tables()
EVERY_TABLE = tables.every_table()


class MaintenanceConfig(dg.Config):
    retention_days: int = Field(
        default=400, description="Partitions of days older than this are dropped (dated tables only); 0 keeps everything."
    )
    vacuum_retention_hours: int = Field(
        default=24 * HISTORY_RETENTION_DAYS,
        description="Files unread by any version of this age are deleted; time travel stops there. At least 168.",
    )
    archive: bool = Field(
        default=True,
        description="Expired days of clean readings and features move to the archive (training reads them when asked) instead of being deleted.",
    )
    archive_root: str | None = Field(
        default=None, description="Where the archive's tables live; unset means FS_ARCHIVE_ROOT, else FS_DATA_ROOT/archive."
    )
    archive_retention_days: int = Field(
        default=0, description="Archived days older than this are deleted from the archive; 0 keeps them all."
    )


def _steps_table(steps: list[delta_ops.MaintenanceStep]) -> dg.MetadataValue:
    """What each step did to each table, as a table in the UI."""
    keys = sorted({k for s in steps for k in s.metrics})
    return table_metadata([s.as_row() for s in steps], columns=["table", "step", "version_before", "version_after", *keys])


def _existing(delta: DeltaTables, tables) -> list[str]:
    return [t for t in tables if delta.exists(t)]


@dg.op(
    retry_policy=dg.RetryPolicy(max_retries=2, delay=60),
    description="Move the days older than the retention to the archive (clean readings, features) or delete them (the rest).",
)
def drop_expired_partitions(context: dg.OpExecutionContext, config: MaintenanceConfig, delta: DeltaTables) -> list[str]:
    steps, archive_steps = [], []
    archive = DeltaTables(spark=delta.spark, root=config.archive_root or settings.archive_root())
    if config.retention_days > 0:
        today = datetime.now(UTC).date()
        cutoff: date = today - timedelta(days=config.retention_days)
        for t in _existing(delta, DATED_TABLES):
            if config.archive and t in ARCHIVED_TABLES:
                steps.append(delta_ops.archive_partitions_before(delta, archive, t, DATED_TABLES[t], cutoff))
            else:
                steps.append(delta_ops.drop_partitions_before(delta, t, DATED_TABLES[t], cutoff))
        if config.archive and config.archive_retention_days > 0:
            archive_cutoff = today - timedelta(days=config.archive_retention_days)
            archive_steps = [
                replace(delta_ops.drop_partitions_before(archive, t, ARCHIVED_TABLES[t], archive_cutoff), table=f"archive: {t}")
                for t in _existing(archive, ARCHIVED_TABLES)
            ]
    context.add_output_metadata(
        {
            "retention_days": config.retention_days,
            "partitions_dropped": sum(s.metrics.get("partitions_dropped", 0) for s in steps),
            "partitions_archived": sum(s.metrics.get("partitions_archived", 0) for s in steps),
            "rows_archived": sum(s.metrics.get("rows_archived", 0) for s in steps),
            "archive_partitions_dropped": sum(s.metrics.get("partitions_dropped", 0) for s in archive_steps),
            "archive_root": archive.base() if config.archive else "off",
            "tables": _steps_table(steps + archive_steps),
        }
    )
    return [s.table for s in steps]


@dg.op(
    retry_policy=dg.RetryPolicy(max_retries=2, delay=60),
    description="OPTIMIZE every Delta table: small files compacted, contents unchanged.",
)
def compact_tables(context: dg.OpExecutionContext, after: list[str], delta: DeltaTables) -> list[str]:
    steps = [delta_ops.optimize(delta, t) for t in _existing(delta, EVERY_TABLE)]
    context.add_output_metadata(
        {
            "files_removed": sum(s.metrics.get("numRemovedFiles", 0) for s in steps),
            "files_added": sum(s.metrics.get("numAddedFiles", 0) for s in steps),
            "tables": _steps_table(steps),
        }
    )
    return [s.table for s in steps]


@dg.op(description="VACUUM every Delta table with the configured retention.")
def vacuum_tables(context: dg.OpExecutionContext, config: MaintenanceConfig, tables: list[str], delta: DeltaTables) -> None:
    if config.vacuum_retention_hours < 168:
        raise dg.Failure(
            description=f"vacuum_retention_hours {config.vacuum_retention_hours} is below 168 (7 days): a running reader or writer could lose its files"
        )
    steps = [delta_ops.vacuum(delta, t, config.vacuum_retention_hours) for t in tables]
    context.add_output_metadata(
        {
            "retention_hours": config.vacuum_retention_hours,
            "files_deleted": sum(s.metrics.get("files_deleted") or 0 for s in steps),
            "tables": _steps_table(steps),
        }
    )


@dg.job(
    executor_def=dg.in_process_executor,
    tags=max_runtime_tags(TABLE_MAINTENANCE_RUN),
    description="Weekly Delta maintenance: retention, OPTIMIZE, VACUUM, each step's effect in its metadata.",
)
def table_maintenance_job():
    vacuum_tables(compact_tables(drop_expired_partitions()))


maintenance_schedule = dg.ScheduleDefinition(
    name="maintenance_schedule",
    job=table_maintenance_job,
    cron_schedule="0 4 * * 0",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Sundays 04:00 UTC, when no backfill is expected.",
)
