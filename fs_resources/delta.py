"""Delta tables under `FS_DATA_ROOT/delta`: partition overwrites with `replaceWhere`, and what each write did.

A write replaces exactly the partitions it names, in one Delta commit, so any partition can be
recomputed idempotently and a reader never sees half a partition. What a write did (version,
rows, partitions touched) comes back as Dagster metadata.

Two runs writing the same partitions at once (a backfill over a scheduled run) meet Delta's
optimistic concurrency: the second commit is refused. A write replaces whole partitions with what
it computed, so repeating it on the new table version is safe as long as what it was computed
from has not changed: a refused commit is retried (`commit_retries`, with jittered backoff) only
when every input table the writer names (`inputs`, read pinned with `read_pinned`) is still at the
version it read; otherwise the run fails saying which input moved, and a re-run computes afresh.

Every commit carries the writing run's id in its `userMetadata` (`fs-write:<run id>:<token>`), so
which run wrote what (clean readings and their quarantine rows, say) can be checked on disk. A
write that is one step of a batch spanning several tables (an incremental ingest: quarantine,
clean rows, ledger) also names the batch (`...:batch=<id>`): a re-run of a batch cut short finds
the steps already committed (`batch_commit`) and does not apply them twice.
"""

import json
import logging
import random
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import tenacity
from pydantic import Field

from fs_resources import settings
from fs_resources.spark import DeltaSparkResource, jvm_class

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType


log = logging.getLogger(__name__)

# How far back a write looks for its own commit: writers of one table are serialized by a pool of
# one, so only a concurrent backfill can commit in between, and each commits once per write.
COMMIT_LOOKBACK = 100
# How far a commit's timestamp (the writing driver's clock) may be behind the run start the instance recorded.
CLOCK_MARGIN_SECONDS = 60
# Each commit's `commitInfo` read so far, by table path, table id and version: a committed version
# never changes, and a table created anew at the same path has a new id. Bounded (about 2 KB each).
_COMMIT_INFOS: dict[tuple[str, str, int], dict] = {}
_COMMIT_INFOS_HELD = 20_000


class DeltaTableMissing(RuntimeError):
    """A table was read before the asset that writes it was ever materialized."""


class DeltaCommitConflict(RuntimeError):
    """Every attempt to commit a write was refused because other writers kept committing first."""


class DeltaInputsChanged(RuntimeError):
    """A refused commit was not retried: a table it was computed from changed since it was read."""


class DeltaCommitNotFound(RuntimeError):
    """A write committed, but its commit is not in the table's recent history (so what it did is unknown)."""


def _conflicts() -> tuple[type[BaseException], ...]:
    import delta.exceptions as ex  # importing installs the JVM → Python exception conversion

    return (
        ex.ConcurrentAppendException,
        ex.ConcurrentDeleteReadException,
        ex.ConcurrentDeleteDeleteException,
        ex.ConcurrentTransactionException,
        ex.ConcurrentWriteException,
        ex.MetadataChangedException,
        ex.ProtocolChangedException,
        ex.DeltaConcurrentModificationException,
    )


@dataclass(frozen=True)
class DeltaWrite:
    table: str
    path: str
    version: int
    rows_written: int
    partitions: tuple[str, ...]
    run_id: str | None = None
    operation_metrics: tuple[tuple[str, str], ...] = ()

    def metric(self, name: str) -> int:
        return int(dict(self.operation_metrics).get(name, 0))

    def metadata(self) -> dict[str, dg.MetadataValue]:
        return {
            "delta_table": dg.MetadataValue.text(self.table),
            "delta_path": dg.MetadataValue.path(self.path),
            "delta_version": dg.MetadataValue.int(self.version),
            "dagster/row_count": dg.MetadataValue.int(self.rows_written),
            "partitions_written": dg.MetadataValue.int(len(self.partitions)),
            "written_by_run": dg.MetadataValue.text(self.run_id or "-"),
            "partitions": dg.MetadataValue.text(", ".join(self.partitions[:50]) + (" …" if len(self.partitions) > 50 else "")),
        }


def _sql_literal(value: object) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    text = value.isoformat() if isinstance(value, date) else str(value)
    # Spark SQL reads a backslash in a string literal as an escape: a file name may hold one.
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def replace_where_predicate(partition_values: dict[str, Sequence[object]]) -> str:
    """`a IN ('x', 'y') AND b IN (15, 60)`: the partitions a write replaces (or, with more columns, the rows)."""
    clauses = []
    for column, values in partition_values.items():
        if not values:
            raise ValueError(f"no values given for partition column {column}")
        clauses.append(f"{column} IN ({', '.join(_sql_literal(v) for v in sorted(set(values), key=str))})")
    return " AND ".join(clauses)


class DeltaTables(dg.ConfigurableResource):
    """The project's Delta tables, each a folder under one root, read and written with the run's Spark session."""

    spark: dg.ResourceDependency[DeltaSparkResource]
    root: str | None = Field(default=None, description="Folder (or Hadoop URI) holding the tables; unset means FS_DATA_ROOT/delta.")
    commit_retries: int = Field(
        default=4, ge=0, description="How many times a write refused by a concurrent commit to the same partitions is repeated."
    )
    retry_backoff_seconds: float = Field(
        default=1.0, ge=0, description="First pause before repeating a refused write; doubles each time, with jitter."
    )

    @property
    def session(self) -> "SparkSession":
        return self.spark.spark_session

    def base(self) -> str:
        return (self.root or settings.tables_root()).rstrip("/")

    def path(self, table: str) -> str:
        return f"{self.base()}/{table}"

    def exists(self, table: str) -> bool:
        """`DeltaTable.isDeltaTable`, with the class looked up by its full name (`jvm_class`): asked before
        every read, version and write."""
        session = self.session
        return bool(jvm_class(session._jvm, "io.delta.tables.DeltaTable").isDeltaTable(session._jsparkSession, self.path(table)))

    def read(self, table: str, version: int | None = None) -> "DataFrame":
        if not self.exists(table):
            raise DeltaTableMissing(
                f"Delta table {table!r} does not exist at {self.path(table)}: materialize the asset that writes it first."
            )
        reader = self.session.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(self.path(table))

    def version(self, table: str) -> int | None:
        """The table's latest committed version, read from its log as a read of the table would.

        Asked before and after every write, and by every check that pins what it judged: through
        `DeltaTable.history(1)` each ask was a Spark job (about 0.2 s warm; a small clean run asked
        eight times); the log's own update lists only the commits it has not seen (about 0.01 s)."""
        if not self.exists(table):
            return None
        none = jvm_class(self.session._jvm, "scala.Option").empty()
        return int(self._delta_log(table).update(False, none, none).version())

    def _delta_log(self, table: str):
        """Delta's `DeltaLog` of the table (JVM), cached by Delta per path. Delta's own class, reached
        through the JVM as delta-spark's Python API does not expose it."""
        return jvm_class(self.session._jvm, "org.apache.spark.sql.delta.DeltaLog").forTable(self.session._jsparkSession, self.path(table))

    def _commit_info(self, table: str, version: int) -> dict:
        """One commit's `commitInfo` (operation, operationMetrics, userMetadata, ...) and its version,
        read from its log file alone: a write looks up the commit it just made this way, newest
        first, where `history()` is a Spark job over the last commits (about 0.01 s against 0.2 s)."""
        jvm, log = self.session._jvm, self._delta_log(table)
        commit_file = jvm_class(jvm, "org.apache.spark.sql.delta.util.FileNames").unsafeDeltaFile(log.logPath(), version)
        history = jvm_class(jvm, "org.apache.spark.sql.delta.DeltaHistoryManager")
        found = history.getCommitInfoOpt(log.store(), commit_file, log.newDeltaHadoopConf())
        info = json.loads(found.get().json())["commitInfo"] if found.isDefined() else {}
        return {"operationMetrics": {}, "userMetadata": None, **info, "version": version}

    def recent_commits(self, table: str, last: int = COMMIT_LOOKBACK) -> Iterator[dict]:
        """The `commitInfo` (with `version`) of the table's last `last` commits, newest first, as
        `history(last)` lists them; nothing when the table does not exist.

        Each is read from its log file once per process. A batch asks for its steps' commits several
        times a run (`batch_commit`, `run_commits`): through `history()` each ask was a Spark job over
        the last hundred commits (a small clean run spent about 0.8 s of its 10 s in them)."""
        if not self.exists(table):
            return
        none = jvm_class(self.session._jvm, "scala.Option").empty()
        snapshot = self._delta_log(table).update(False, none, none)
        latest, table_id = int(snapshot.version()), str(snapshot.metadata().id())
        for version in range(latest, max(-1, latest - last), -1):
            key = (self.path(table), table_id, version)
            commit = _COMMIT_INFOS.get(key)
            if commit is None:
                try:
                    commit = self._commit_info(table, version)
                except Exception as exc:
                    if "FileNotFoundException" in str(exc):
                        return  # older commits were cleaned up with the log: `history()` lists none of them either
                    raise
                if len(_COMMIT_INFOS) >= _COMMIT_INFOS_HELD:
                    _COMMIT_INFOS.clear()
                _COMMIT_INFOS[key] = commit
            yield commit

    def read_pinned(self, table: str) -> tuple["DataFrame", int]:
        """The table at its current version, and that version: pass it as a write's `inputs` so a
        refused commit is retried only while the input is unchanged."""
        version = self.version(table)
        if version is None:
            self.read(table)  # raises DeltaTableMissing with its message
        return self.read(table, version=version), version  # type: ignore[arg-type]

    def writer_run_ids(self, table: str, last: int = 20) -> list[str]:
        """The run ids recorded by this project's writes among the table's `last` commits, newest first."""
        metadata = (c["userMetadata"] for c in self.recent_commits(table, last))
        return [m.split(":")[1] for m in metadata if m and m.startswith("fs-write:")]

    def run_commits(self, table: str, run_id: str, since: datetime | None = None) -> list[tuple[int, str]]:
        """(version, operation) of the commits `run_id` made to `table` among its last `COMMIT_LOOKBACK`, oldest first.

        With `since` (when the run started), the walk back stops at the commits made before it, less
        a margin for a writer's clock: a check asking for its own run's commits reads the few it made."""
        oldest = since.timestamp() * 1000 - CLOCK_MARGIN_SECONDS * 1000 if since is not None else None
        found = []
        for commit in self.recent_commits(table):
            if oldest is not None and commit.get("timestamp", 0) < oldest:
                break
            if (commit["userMetadata"] or "").startswith(f"fs-write:{run_id}:"):
                found.append((commit["version"], commit["operation"]))
        return sorted(found)

    def changes(self, table: str, first: int, last: int, kinds: Sequence[str] | None = None) -> "DataFrame":
        """The rows commits `first`..`last` changed (Delta's change data feed), of the `_change_type`s
        in `kinds` (insert, delete, update_preimage, update_postimage), or of every kind."""
        from pyspark.sql import functions as F

        feed = (
            self.session.read.format("delta")
            .option("readChangeFeed", "true")
            .option("startingVersion", first)
            .option("endingVersion", last)
            .load(self.path(table))
        )
        return feed.where(F.col("_change_type").isin(*kinds)) if kinds else feed

    def replace_partitions(
        self,
        df: "DataFrame",
        table: str,
        partition_values: dict[str, Sequence[object]],
        *,
        run_id: str | None = None,
        inputs: dict[str, int] | None = None,
        batch: str | None = None,
        properties: dict[str, str] | None = None,
        rows_of: dict[str, Sequence[object]] | None = None,
    ) -> DeltaWrite:
        """Overwrite exactly the named partitions with `df` in one commit (creating the table if needed).

        `run_id` is recorded with the commit; `inputs` ({table: version read}) guards a retry;
        `properties` are write options: `delta.*` table properties given to a table this write creates,
        or `mergeSchema` to add the columns `df` has and the table lacks.
        `rows_of` ({column: values}, not partition columns) narrows what is replaced to the rows of
        the partitions holding those values: every row of `df` must hold one of them."""
        predicate = replace_where_predicate(partition_values | (rows_of or {}))
        partitions = tuple(
            "/".join(f"{c}={v}" for c, v in zip(partition_values, combo))
            for combo in _product([sorted(set(map(str, v))) for v in partition_values.values()])
        )

        def save(token: str) -> None:
            (
                df.write.format("delta")
                .mode("overwrite")
                .option("replaceWhere", predicate)
                .option("userMetadata", token)
                .options(**(properties or {}))
                .partitionBy(*partition_values.keys())
                .save(self.path(table))
            )

        return self._commit(table, save, partitions, run_id, inputs or {}, batch)

    def append(
        self, df: "DataFrame", table: str, partition_by: Sequence[str], *, run_id: str | None = None, batch: str | None = None
    ) -> DeltaWrite:
        """Add `df`'s rows in one commit (creating the table if needed)."""

        def save(token: str) -> None:
            df.write.format("delta").mode("append").option("userMetadata", token).partitionBy(*partition_by).save(self.path(table))

        return self._commit(table, save, (), run_id, {}, batch)

    def merge(
        self,
        source: "DataFrame",
        table: str,
        on: str,
        update_when: str = "true",
        *,
        delete_when: str | None = None,
        run_id: str | None = None,
        inputs: dict[str, int] | None = None,
        batch: str | None = None,
    ) -> DeltaWrite:
        """Delta MERGE in one commit (aliases `t` for the table, `s` for the source). A source row
        matching a target row `on` deletes it when `delete_when` holds, else replaces it when
        `update_when` holds; a source row matching none is inserted (unless `delete_when` holds).
        The table's columns are taken from the source by name; extra source columns are ignored."""
        from delta.tables import DeltaTable

        columns = self.read(table).columns
        values = {c: f"s.`{c}`" for c in columns}
        keep = f"NOT ({delete_when})" if delete_when else None

        def save(token: str) -> None:
            conf = "spark.databricks.delta.commitInfo.userMetadata"
            self.session.conf.set(conf, token)
            try:
                builder = DeltaTable.forPath(self.session, self.path(table)).alias("t").merge(source.alias("s"), on)
                if delete_when:
                    builder = builder.whenMatchedDelete(condition=delete_when)
                update = f"({update_when}) AND {keep}" if keep else update_when
                builder.whenMatchedUpdate(condition=update, set=values).whenNotMatchedInsert(condition=keep, values=values).execute()
            finally:
                self.session.conf.unset(conf)

        return self._commit(table, save, (), run_id, inputs or {}, batch)

    def add_columns(self, table: str, schema: "StructType") -> list[str]:
        """Give an existing table the columns of `schema` it lacks (NULL in the rows it holds), so a
        writer of a newer schema can write to it; the names of the columns added."""
        held = set(self.read(table).columns)
        missing = [f for f in schema.fields if f.name not in held]
        if missing:
            columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in missing)
            self.session.sql(f"ALTER TABLE delta.`{self.path(table)}` ADD COLUMNS ({columns})")
        return [f.name for f in missing]

    def properties(self, table: str) -> dict[str, str]:
        """The table's properties, from its metadata alone (`detail()` also lists every data file: Spark jobs)."""
        return {r["key"]: r["value"] for r in self.session.sql(f"SHOW TBLPROPERTIES delta.`{self.path(table)}`").collect()}

    def set_properties(self, table: str, properties: dict[str, str]) -> None:
        """Give an existing table these properties (one commit, only when one differs); a table created
        by `replace_partitions(properties=...)` already has them."""
        held = self.properties(table)
        changed = {k: v for k, v in properties.items() if held.get(k) != v}
        if changed:
            pairs = ", ".join(f"'{k}' = '{v}'" for k, v in sorted(changed.items()))
            self.session.sql(f"ALTER TABLE delta.`{self.path(table)}` SET TBLPROPERTIES ({pairs})")

    def batch_commit(self, table: str, batch: str) -> DeltaWrite | None:
        """The commit a write of `batch` made to `table`, if one did (among the last `COMMIT_LOOKBACK`)."""
        tag = f":batch={batch}"
        for commit in self.recent_commits(table):
            metadata = commit["userMetadata"] or ""
            if metadata.startswith("fs-write:") and metadata.endswith(tag):
                return self._described(table, commit, (), metadata.split(":")[1])
        return None

    def _described(self, table: str, commit, partitions: tuple[str, ...], run_id: str | None) -> DeltaWrite:
        metrics = commit["operationMetrics"] or {}
        rows = int(metrics.get("numOutputRows", 0)) or int(metrics.get("numTargetRowsInserted", 0)) + int(
            metrics.get("numTargetRowsUpdated", 0)
        )
        return DeltaWrite(
            table, self.path(table), commit["version"], rows, partitions, run_id, tuple(sorted((k, str(v)) for k, v in metrics.items()))
        )

    def overwrite(self, df: "DataFrame", table: str, *, run_id: str | None = None, inputs: dict[str, int] | None = None) -> DeltaWrite:
        """Replace a small unpartitioned table whole, in one commit."""

        def save(token: str) -> None:
            df.write.format("delta").mode("overwrite").option("overwriteSchema", "true").option("userMetadata", token).save(
                self.path(table)
            )

        return self._commit(table, save, (), run_id, inputs or {})

    def _commit(
        self,
        table: str,
        save: Callable[[str], None],
        partitions: tuple[str, ...],
        run_id: str | None,
        inputs: dict[str, int],
        batch: str | None = None,
    ) -> DeltaWrite:
        """Run `save` until Delta accepts its commit (or `commit_retries` are spent), then describe that commit."""
        token = f"fs-write:{run_id or '-'}:{uuid.uuid4().hex}" + (f":batch={batch}" if batch else "")
        conflicts = _conflicts()
        before = self.version(table)

        def attempt_save() -> None:
            nonlocal before
            before = self.version(table)
            save(token)

        def refused(state: tenacity.RetryCallState) -> bool:
            """Whether to try again: a conflict, with retries left and this write's inputs unchanged."""
            error = state.outcome.exception() if state.outcome else None
            if not isinstance(error, conflicts):
                return False
            if state.attempt_number > self.commit_retries:
                raise DeltaCommitConflict(
                    f"Writing {table!r} was refused {state.attempt_number} times because another run committed to the same "
                    f"partitions first ({type(error).__name__}); nothing of this write is visible. Re-run it, or raise "
                    f"`commit_retries` on the delta resource if runs on these partitions often overlap."
                ) from error
            moved = {t: (v, self.version(t)) for t, v in inputs.items() if self.version(t) != v}
            if moved:
                raise DeltaInputsChanged(
                    f"Writing {table!r} was refused because another run committed to the same partitions first "
                    f"({type(error).__name__}), and what this write was computed from has changed since: "
                    + ", ".join(f"{t} v{was} -> v{now}" for t, (was, now) in moved.items())
                    + ". Repeating it would write stale results; nothing of this write is visible. Re-run it to compute from the new data."
                ) from error
            return True

        def pause(state: tenacity.RetryCallState) -> float:
            # Jittered: two runs refused by each other do not retry in step.
            return self.retry_backoff_seconds * 2 ** (state.attempt_number - 1) * (1 + random.random())

        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            sleep = state.next_action.sleep if state.next_action else 0.0
            log.warning(
                "%s: commit refused (%s), another run wrote the same partitions; retrying in %.1f s", table, type(error).__name__, sleep
            )

        tenacity.Retrying(retry=refused, stop=tenacity.stop_never, wait=pause, before_sleep=before_sleep, reraise=True)(attempt_save)
        # The commit is found by its token, not as "the latest": another writer may have committed since.
        # Read from the log itself, not from the records `recent_commits` keeps: the drills that cut a
        # batch short remove its newest commit file, and a retry in the same process then commits
        # that version again with other content.
        latest = self.version(table)
        oldest = max(-1 if before is None else before, latest - COMMIT_LOOKBACK)
        mine = next((c for c in map(lambda v: self._commit_info(table, v), range(latest, oldest, -1)) if c["userMetadata"] == token), None)
        if mine is None and latest == before:
            # Delta writes no commit for a write that changes nothing (no rows in, none replaced).
            return DeltaWrite(table, self.path(table), before, 0, partitions, run_id)  # type: ignore[arg-type]
        if mine is None:
            raise DeltaCommitNotFound(
                f"Writing {table!r} committed, but its commit (userMetadata {token}) is not among the table's last "
                f"{COMMIT_LOOKBACK} commits: other writers committed in between, so what this write did cannot be reported. "
                "The data is written; re-running the step reports it."
            )
        return self._described(table, mine, partitions, run_id)


@dataclass(frozen=True)
class MaintenanceStep:
    """What one maintenance step did to one table."""

    table: str
    step: str
    version_before: int | None
    version_after: int | None
    metrics: dict

    def as_row(self) -> dict:
        return {
            "table": self.table,
            "step": self.step,
            "version_before": self.version_before,
            "version_after": self.version_after,
            **self.metrics,
        }


def _metrics(last_commit) -> dict:
    return {k: int(v) if str(v).isdigit() else v for k, v in (last_commit["operationMetrics"] or {}).items()}


def optimize(delta: DeltaTables, table: str) -> MaintenanceStep:
    """Compact small files (Delta OPTIMIZE): one commit, data unchanged."""
    from delta.tables import DeltaTable

    before = delta.version(table)
    DeltaTable.forPath(delta.session, delta.path(table)).optimize().executeCompaction()
    last = DeltaTable.forPath(delta.session, delta.path(table)).history(1).first()
    metrics = _metrics(last) if last["operation"] == "OPTIMIZE" else {"numAddedFiles": 0, "numRemovedFiles": 0}
    wanted = {k: metrics.get(k, 0) for k in ("numAddedFiles", "numRemovedFiles", "numAddedBytes", "numRemovedBytes")}
    return MaintenanceStep(table, "optimize", before, last["version"], wanted)


def drop_partitions_before(delta: DeltaTables, table: str, column: str, cutoff: date) -> MaintenanceStep:
    """Delete every partition of `column` older than `cutoff` (whole files, one commit)."""
    from delta.tables import DeltaTable

    before = delta.version(table)
    handle = DeltaTable.forPath(delta.session, delta.path(table))
    old = handle.toDF().where(f"{column} < DATE'{cutoff.isoformat()}'").select(column).distinct().count()
    if old == 0:
        return MaintenanceStep(table, "retention", before, before, {"partitions_dropped": 0, "cutoff": cutoff.isoformat()})
    handle.delete(f"{column} < DATE'{cutoff.isoformat()}'")
    last = DeltaTable.forPath(delta.session, delta.path(table)).history(1).first()
    metrics = _metrics(last)
    return MaintenanceStep(
        table,
        "retention",
        before,
        last["version"],
        {
            "partitions_dropped": old,
            "cutoff": cutoff.isoformat(),
            "numDeletedRows": metrics.get("numDeletedRows", 0),
            "numRemovedFiles": metrics.get("numRemovedFiles", 0),
        },
    )


def archive_partitions_before(delta: DeltaTables, archive: DeltaTables, table: str, column: str, cutoff: date) -> MaintenanceStep:
    """Move every partition of `column` older than `cutoff` to the same table under `archive`'s root:
    the days are written there (replacing those days, so a run killed between the two commits and
    run again archives them once), compacted, then deleted here."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    before = delta.version(table)
    expired = f"{column} < DATE'{cutoff.isoformat()}'"
    days = sorted(r[0] for r in delta.read(table).where(expired).select(column).distinct().collect())
    if not days:
        return MaintenanceStep(table, "archive", before, before, {"partitions_archived": 0, "cutoff": cutoff.isoformat()})
    hot = DeltaTable.forPath(delta.session, delta.path(table))
    partitioned_by = list(hot.detail().first()["partitionColumns"]) or [column]
    moved = delta.read(table).where(F.col(column).isin(days))
    rows = moved.count()
    # Laid out as the table is (its partition columns), so a reader treats both alike.
    moved.write.format("delta").mode("overwrite").option("replaceWhere", replace_where_predicate({column: days})).partitionBy(
        *partitioned_by
    ).save(archive.path(table))
    DeltaTable.forPath(archive.session, archive.path(table)).optimize().where(replace_where_predicate({column: days})).executeCompaction()
    hot.delete(replace_where_predicate({column: days}))
    return MaintenanceStep(
        table,
        "archive",
        before,
        delta.version(table),
        {
            "partitions_archived": len(days),
            "rows_archived": rows,
            "cutoff": cutoff.isoformat(),
            "archive": archive.path(table),
            "archive_version": archive.version(table),
        },
    )


def keep_history(delta: DeltaTables, table: str, hours: int) -> None:
    """Keep the table's log entries and removed files for at least `hours`, so time travel reaches
    as far back as VACUUM leaves files (Delta's defaults, 30 and 7 days, would cut it short)."""
    interval = f"interval {-(-hours // 24)} days"
    wanted = {"delta.logRetentionDuration": interval, "delta.deletedFileRetentionDuration": interval}
    current = delta.properties(table)
    if all(current.get(k) == v for k, v in wanted.items()):
        return  # already so (tables created by this project are): no extra commit
    delta.session.sql(
        f"ALTER TABLE delta.`{delta.path(table)}` SET TBLPROPERTIES "
        f"('delta.logRetentionDuration' = '{interval}', 'delta.deletedFileRetentionDuration' = '{interval}')"
    )


def vacuum(delta: DeltaTables, table: str, retention_hours: int) -> MaintenanceStep:
    """Delete files no version within `retention_hours` still reads (time travel stops there)."""
    from delta.tables import DeltaTable

    keep_history(delta, table, retention_hours)
    base = Path(delta.path(table))
    files_before = sum(1 for _ in base.rglob("*.parquet")) if base.exists() else None
    DeltaTable.forPath(delta.session, delta.path(table)).vacuum(retention_hours)
    files_after = sum(1 for _ in base.rglob("*.parquet")) if base.exists() else None
    version = delta.version(table)
    removed = (files_before - files_after) if files_before is not None else None
    return MaintenanceStep(table, "vacuum", version, version, {"retention_hours": retention_hours, "files_deleted": removed})


def _product(lists: list[list[str]]) -> list[tuple[str, ...]]:
    combos: list[tuple[str, ...]] = [()]
    for values in lists:
        combos = [c + (v,) for c in combos for v in values]
    return combos
