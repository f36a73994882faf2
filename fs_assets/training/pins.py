"""Pins: what a promoted reference's training set was built from, kept for as long as it is needed.

A training set reads the features table as of a processing time (`features_as_of`); Delta answers
that only while the table's log and the data files of that version are kept (`HISTORY_RETENTION_DAYS`,
then maintenance's VACUUM and log clean-up remove them). A promoted model must stay explainable and
rebuildable long after that, so promoting a reference pins its training set's inputs:

- the labelled entities (device, sample time, label, hours to the event), as the set holds them;
- the feature windows its point-in-time join chose from: the windows of the model's size, for those
  devices, from `tolerance` before the first sample to the last, read as of the same processing time.

A deep copy into tables of their own (`training_pins/<version>/<model>/...`, one partition per
snapshot), not a shallow clone or a checkpoint: a shallow clone shares the source's data files,
which VACUUM removes, and a checkpoint keeps the log, not the files. The copy holds what the join
needs and nothing more (a daily model at 100,000 devices over a year: about 37 M windows of its 12
features). `rebuild_training_set` runs the same join on the pinned inputs, so it returns the
original rows, whatever retention removed since.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fs_assets.timestamps import instant
from fs_domain.models import ModelSpec
from fs_domain.tables import pin_table, training_table
from fs_resources.delta import DeltaTables, DeltaWrite
from fs_resources.offline import OfflineStore

# What a training row is besides its features: the entity, its label, and what it was read from.
ENTITY_COLUMNS = ("device_id", "event_time", "label", "hours_to_event")
RECORD_COLUMNS = ("features_as_of", "features_delta_version", "maintenance_delta_version")


class PinError(RuntimeError):
    """A pin cannot be made or read (its training set is gone, or nothing was pinned)."""


def training_rows(joined: DataFrame, model: ModelSpec, as_of: datetime, features_version: int | None, maintenance_version: int | None):
    """A training set's rows from its point-in-time join: the model and version, the entity and label,
    the features, the window they came from and the Delta versions read."""
    return joined.select(
        F.lit(model.name).alias("model"),
        F.lit(model.feature_set_version).alias("feature_set_version"),
        "device_id",
        "event_time",
        "label",
        "hours_to_event",
        *[F.col(f).cast("double").alias(f) for f in model.features],
        "feature_window_end",
        instant(as_of).alias("features_as_of"),
        F.lit(features_version).cast("long").alias("features_delta_version"),
        F.lit(maintenance_version).cast("long").alias("maintenance_delta_version"),
    )


def is_pinned(delta: DeltaTables, model: ModelSpec, snapshot_version: int) -> bool:
    table = pin_table(model.name, model.feature_set_version, "entities")
    return delta.exists(table) and delta.read(table).where(F.col("snapshot_version") == snapshot_version).limit(1).count() > 0


def pin_training_set(
    delta: DeltaTables, model: ModelSpec, snapshot_version: int, training_version: int, run_id: str | None = None
) -> dict[str, int]:
    """Copy what the training set (its table at `training_version`) was built from under
    `snapshot_version`: its entities and the windows its join chose from. Idempotent (a snapshot's
    partition is replaced). Returns the rows pinned of each."""
    source = training_table(model.name, model.feature_set_version)
    try:
        training = delta.read(source, version=training_version)
        recorded = training.select(F.unix_micros("features_as_of").alias("as_of_us"), *RECORD_COLUMNS).limit(1).collect()
    except Exception as exc:  # noqa: BLE001 - the version is gone: say which and what to do
        raise PinError(
            f"{source} version {training_version} cannot be read any more ({type(exc).__name__}): rebuild the training set "
            f"and take a new reference snapshot of {model.key}, then promote that one"
        ) from exc
    if not recorded or recorded[0]["features_as_of"] is None:
        raise PinError(f"{source} version {training_version} records no features_as_of: rebuild it before promoting its snapshot")
    as_of = datetime.fromtimestamp(recorded[0]["as_of_us"] / 1_000_000, UTC)
    entities = training.select(*ENTITY_COLUMNS, *RECORD_COLUMNS).withColumn("snapshot_version", F.lit(snapshot_version))
    bounds = training.agg(F.min("event_time").alias("first"), F.max("event_time").alias("last")).first()
    store = OfflineStore(tables_root=delta.base(), feature_set_version=model.feature_set_version)
    windows = (
        store.windows(delta.session, list(model.features), model.window_minutes, model.tolerance, as_of, bounds["first"], bounds["last"])
        .join(training.select("device_id").distinct(), "device_id", "left_semi")
        .withColumn("snapshot_version", F.lit(snapshot_version))
    )
    partition = {"snapshot_version": [snapshot_version]}
    written: dict[str, DeltaWrite] = {
        "entities": delta.replace_partitions(
            entities, pin_table(model.name, model.feature_set_version, "entities"), partition, run_id=run_id
        ),
        "windows": delta.replace_partitions(windows, pin_table(model.name, model.feature_set_version, "windows"), partition, run_id=run_id),
    }
    return {kind: write.rows_written for kind, write in written.items()}


def rebuild_training_set(delta: DeltaTables, model: ModelSpec, snapshot_version: int) -> DataFrame:
    """The training set a pinned snapshot was fitted on, rebuilt from its pin: the same join on the
    same inputs, so the same rows as the original (read lazily; write it where it is wanted)."""
    table = pin_table(model.name, model.feature_set_version, "entities")
    if not is_pinned(delta, model, snapshot_version):
        raise PinError(
            f"snapshot v{snapshot_version} of {model.key} has no pin in {table}: only promoted snapshots are pinned "
            f"(promote it with promoted_reference, snapshot_version {snapshot_version}, while its training set is readable)"
        )
    entities = delta.read(table).where(F.col("snapshot_version") == snapshot_version).drop("snapshot_version")
    recorded = entities.select(F.unix_micros("features_as_of").alias("as_of_us"), *RECORD_COLUMNS).first()
    windows = delta.read(pin_table(model.name, model.feature_set_version, "windows")).where(F.col("snapshot_version") == snapshot_version)
    store = OfflineStore(tables_root=delta.base(), feature_set_version=model.feature_set_version)
    joined = store.join_windows(entities.select(*ENTITY_COLUMNS), windows, list(model.features), model.window_minutes, model.tolerance)
    return training_rows(
        joined,
        model,
        datetime.fromtimestamp(recorded["as_of_us"] / 1_000_000, UTC),
        recorded["features_delta_version"],
        recorded["maintenance_delta_version"],
    )
