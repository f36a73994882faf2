"""Delta tables under `FS_DATA_ROOT/delta`: partition overwrites with `replaceWhere`, and what each write did.

A write replaces exactly the partitions it names, in one Delta commit, so any partition can be
recomputed idempotently and a reader never sees half a partition. What a write did (version,
rows, partitions touched) comes back as Dagster metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import dagster as dg
from pydantic import Field

from fs_resources import settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


class DeltaTableMissing(RuntimeError):
    """A table was read before the asset that writes it was ever materialized."""


@dataclass(frozen=True)
class DeltaWrite:
    table: str
    path: str
    version: int
    rows_written: int
    partitions: tuple[str, ...]

    def metadata(self) -> dict[str, dg.MetadataValue]:
        return {
            "delta_table": dg.MetadataValue.text(self.table),
            "delta_path": dg.MetadataValue.path(self.path),
            "delta_version": dg.MetadataValue.int(self.version),
            "dagster/row_count": dg.MetadataValue.int(self.rows_written),
            "partitions_written": dg.MetadataValue.int(len(self.partitions)),
            "partitions": dg.MetadataValue.text(", ".join(self.partitions[:50]) + (" …" if len(self.partitions) > 50 else "")),
        }


def _sql_literal(value: object) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    text = value.isoformat() if isinstance(value, date) else str(value)
    return "'" + text.replace("'", "''") + "'"


def replace_where_predicate(partition_values: dict[str, Sequence[object]]) -> str:
    """`a IN ('x', 'y') AND b IN (15, 60)`: the partitions a write replaces."""
    clauses = []
    for column, values in partition_values.items():
        if not values:
            raise ValueError(f"no values given for partition column {column}")
        clauses.append(f"{column} IN ({', '.join(_sql_literal(v) for v in sorted(set(values), key=str))})")
    return " AND ".join(clauses)


class DeltaTables(dg.ConfigurableResource):
    """The project's Delta tables, each a folder under one root."""

    root: str | None = Field(default=None, description="Folder (or Hadoop URI) holding the tables; unset means FS_DATA_ROOT/delta.")

    def base(self) -> str:
        return (self.root or settings.tables_root()).rstrip("/")

    def path(self, table: str) -> str:
        return f"{self.base()}/{table}"

    def exists(self, spark: "SparkSession", table: str) -> bool:
        from delta.tables import DeltaTable

        return DeltaTable.isDeltaTable(spark, self.path(table))

    def read(self, spark: "SparkSession", table: str, version: int | None = None) -> "DataFrame":
        if not self.exists(spark, table):
            raise DeltaTableMissing(f"Delta table {table!r} does not exist at {self.path(table)}: materialize the asset that writes it first.")
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(self.path(table))

    def version(self, spark: "SparkSession", table: str) -> int | None:
        from delta.tables import DeltaTable

        if not self.exists(spark, table):
            return None
        return DeltaTable.forPath(spark, self.path(table)).history(1).first()["version"]

    def replace_partitions(
        self,
        spark: "SparkSession",
        df: "DataFrame",
        table: str,
        partition_values: dict[str, Sequence[object]],
    ) -> DeltaWrite:
        """Overwrite exactly the named partitions with `df` in one commit (creating the table if needed)."""
        from delta.tables import DeltaTable

        predicate = replace_where_predicate(partition_values)
        (
            df.write.format("delta")
            .mode("overwrite")
            .option("replaceWhere", predicate)
            .partitionBy(*partition_values.keys())
            .save(self.path(table))
        )
        last = DeltaTable.forPath(spark, self.path(table)).history(1).first()
        metrics = last["operationMetrics"] or {}
        partitions = tuple(
            "/".join(f"{c}={v}" for c, v in zip(partition_values, combo))
            for combo in _product([sorted(set(map(str, v))) for v in partition_values.values()])
        )
        return DeltaWrite(table, self.path(table), last["version"], int(metrics.get("numOutputRows", 0)), partitions)

    def overwrite(self, spark: "SparkSession", df: "DataFrame", table: str) -> DeltaWrite:
        """Replace a small unpartitioned table whole, in one commit."""
        from delta.tables import DeltaTable

        df.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(self.path(table))
        last = DeltaTable.forPath(spark, self.path(table)).history(1).first()
        metrics = last["operationMetrics"] or {}
        return DeltaWrite(table, self.path(table), last["version"], int(metrics.get("numOutputRows", 0)), ())


@dataclass(frozen=True)
class MaintenanceStep:
    """What one maintenance step did to one table."""

    table: str
    step: str
    version_before: int | None
    version_after: int | None
    metrics: dict

    def as_row(self) -> dict:
        return {"table": self.table, "step": self.step, "version_before": self.version_before, "version_after": self.version_after, **self.metrics}


def _metrics(last_commit) -> dict:
    return {k: int(v) if str(v).isdigit() else v for k, v in (last_commit["operationMetrics"] or {}).items()}


def optimize(spark: "SparkSession", delta: "DeltaTables", table: str) -> MaintenanceStep:
    """Compact small files (Delta OPTIMIZE): one commit, data unchanged."""
    from delta.tables import DeltaTable

    before = delta.version(spark, table)
    DeltaTable.forPath(spark, delta.path(table)).optimize().executeCompaction()
    last = DeltaTable.forPath(spark, delta.path(table)).history(1).first()
    metrics = _metrics(last) if last["operation"] == "OPTIMIZE" else {"numAddedFiles": 0, "numRemovedFiles": 0}
    wanted = {k: metrics.get(k, 0) for k in ("numAddedFiles", "numRemovedFiles", "numAddedBytes", "numRemovedBytes")}
    return MaintenanceStep(table, "optimize", before, last["version"], wanted)


def drop_partitions_before(spark: "SparkSession", delta: "DeltaTables", table: str, column: str, cutoff: date) -> MaintenanceStep:
    """Delete every partition of `column` older than `cutoff` (whole files, one commit)."""
    from delta.tables import DeltaTable

    before = delta.version(spark, table)
    handle = DeltaTable.forPath(spark, delta.path(table))
    old = handle.toDF().where(f"{column} < DATE'{cutoff.isoformat()}'").select(column).distinct().count()
    if old == 0:
        return MaintenanceStep(table, "retention", before, before, {"partitions_dropped": 0, "cutoff": cutoff.isoformat()})
    handle.delete(f"{column} < DATE'{cutoff.isoformat()}'")
    last = DeltaTable.forPath(spark, delta.path(table)).history(1).first()
    metrics = _metrics(last)
    return MaintenanceStep(
        table, "retention", before, last["version"],
        {"partitions_dropped": old, "cutoff": cutoff.isoformat(), "numDeletedRows": metrics.get("numDeletedRows", 0), "numRemovedFiles": metrics.get("numRemovedFiles", 0)},
    )


def vacuum(spark: "SparkSession", delta: "DeltaTables", table: str, retention_hours: int) -> MaintenanceStep:
    """Delete files no version within `retention_hours` still reads (time travel stops there)."""
    from delta.tables import DeltaTable

    base = Path(delta.path(table))
    files_before = sum(1 for _ in base.rglob("*.parquet")) if base.exists() else None
    DeltaTable.forPath(spark, delta.path(table)).vacuum(retention_hours)
    files_after = sum(1 for _ in base.rglob("*.parquet")) if base.exists() else None
    version = delta.version(spark, table)
    removed = (files_before - files_after) if files_before is not None else None
    return MaintenanceStep(table, "vacuum", version, version, {"retention_hours": retention_hours, "files_deleted": removed})


def _product(lists: list[list[str]]) -> list[tuple[str, ...]]:
    combos: list[tuple[str, ...]] = [()]
    for values in lists:
        combos = [c + (v,) for c in combos for v in values]
    return combos
