"""`maintenance_schedule` (weekly): `table_maintenance_job` drops partitions past retention, compacts
every Delta table (OPTIMIZE) and vacuums files no kept version reads. Each step reports per table
what it did (versions before and after, files and rows touched) as metadata.

Vacuum retention bounds time travel: a training set rebuilt `as_of` a time older than the
retention cannot be read any more. The default keeps 90 days (Delta's own floor is 7).
"""

from datetime import UTC, date, datetime, timedelta

import dagster as dg
from pydantic import Field

from fs_assets.metadata import table_metadata
from fs_domain import tables
from fs_domain.run_limits import TABLE_MAINTENANCE_RUN, max_runtime_tags
from fs_resources import delta as delta_ops
from fs_resources.delta import DeltaTables
from fs_resources.spark import HISTORY_RETENTION_DAYS

# The one catalog of tables (`fs_domain.tables`): retention reads the dated ones, compaction and
# vacuum every one, so a table the store writes is never left out of maintenance.
DATED_TABLES = tables.dated_tables()
EVERY_TABLE = tables.every_table()


class MaintenanceConfig(dg.Config):
    retention_days: int = Field(
        default=400, description="Partitions of days older than this are dropped (dated tables only); 0 keeps everything."
    )
    vacuum_retention_hours: int = Field(
        default=24 * HISTORY_RETENTION_DAYS,
        description="Files unread by any version of this age are deleted; time travel stops there. At least 168.",
    )


def _steps_table(steps: list[delta_ops.MaintenanceStep]) -> dg.MetadataValue:
    """What each step did to each table, as a table in the UI."""
    keys = sorted({k for s in steps for k in s.metrics})
    return table_metadata([s.as_row() for s in steps], columns=["table", "step", "version_before", "version_after", *keys])


def _existing(delta: DeltaTables, tables) -> list[str]:
    return [t for t in tables if delta.exists(t)]


@dg.op(retry_policy=dg.RetryPolicy(max_retries=2, delay=60), description="Delete the partitions of days older than the retention.")
def drop_expired_partitions(context: dg.OpExecutionContext, config: MaintenanceConfig, delta: DeltaTables) -> list[str]:
    steps = []
    if config.retention_days > 0:
        cutoff: date = (datetime.now(UTC) - timedelta(days=config.retention_days)).date()
        steps = [delta_ops.drop_partitions_before(delta, t, DATED_TABLES[t], cutoff) for t in _existing(delta, DATED_TABLES)]
    context.add_output_metadata(
        {
            "retention_days": config.retention_days,
            "partitions_dropped": sum(s.metrics.get("partitions_dropped", 0) for s in steps),
            "tables": _steps_table(steps),
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
