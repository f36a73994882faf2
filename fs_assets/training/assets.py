"""`training_dataset`, `feature_reference_snapshot` and `promoted_reference`: one partition per model.

Each run works on the feature set version the model is pinned to (`MODEL_PINS`, `FS_MODEL_VERSIONS`,
or the `feature_store` resource's `model_versions` for one run, to train ahead of moving a pin),
with that version's spec of the model (fs_domain/models.py), and writes under that version's
tables only.

The training set is built with the same `OfflineStore.get_historical_features` ML scientists call
from a notebook, as of a recorded processing time, so rebuilding it later with that `as_of` gives
the same rows even after days were recomputed; promoting its reference pins what it read
(fs_assets/training/pins.py), so it can be rebuilt even after history retention removed those versions. The reference snapshot is the model's memory of
its training features and of each device's normal (the anomaly score's per-device references,
fitted with it, so a promoted snapshot scores the same way every time); it becomes the baseline
of drift reports and anomaly scores only when promoted (`promoted_reference`, with who and why),
and promoting an older one rolls back.
"""

import getpass
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd
from pydantic import Field
from pyspark.sql import functions as F

from fs_assets.features.assets import feature_assets
from fs_assets.ingest.assets import device_registry, maintenance_events
from fs_assets.metadata import table_metadata
from fs_assets.partitions import model_partitions
from fs_assets.training.anomaly import fit_reference
from fs_assets.training.datasets import balance_labels, feature_statistics, label_entities_spark, sample_entities_spark
from fs_assets.training.pins import PinError, pin_training_set, rebuild_training_set, training_rows
from fs_assets.training.reference import (
    Promotion,
    ReferenceSnapshot,
    fitted_device_references,
    next_snapshot_version,
    promoted,
    promotions,
    read_snapshot,
    record_promotion,
    write_device_references,
    write_snapshot,
)
from fs_domain.models import MIN_DEVICE_WINDOWS
from fs_domain.tables import MAINTENANCE_TABLE, PROMOTIONS_TABLE, REFERENCE_TABLE, REGISTRY_TABLE, TRAINING_TABLE, training_table
from fs_resources.delta import DeltaTables, DeltaWrite
from fs_resources.feature_store import FeatureStoreResource
from fs_resources.offline import OfflineStore


class TrainingDatasetConfig(dg.Config):
    start: str | None = Field(
        default=None, description="First day (YYYY-MM-DD, UTC); unset: the first day with features of the model's window size."
    )
    end: str | None = Field(default=None, description="Last day (inclusive); unset: the last day with features.")
    as_of: str | None = Field(
        default=None, description="Processing time (ISO-8601 with offset) to read features as of; unset: now. Recorded either way."
    )
    device_share: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="Share of the registry's devices sampled (the same share picks the same devices for a seed).",
    )
    sample_stride: int = Field(default=1, ge=1, description="Keep every n-th sample time of the model's cadence (1: all).")
    negatives_per_positive: float | None = Field(
        default=None, gt=0.0, description="Class balance: keep every positive and about this many negatives per positive; unset: all rows."
    )
    seed: int = Field(default=0, description="Seed of the device share and the class balance's sampling.")
    rebuild_snapshot: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Rebuild the training set a promoted reference snapshot was fitted on, from its pin (`training_pins`): the same "
            "rows, even after history retention removed the versions it read. The options above are then ignored."
        ),
    )


def _feature_days(delta: DeltaTables, table: str, minutes: int) -> tuple[str, str]:
    bounds = (
        delta.read(table)
        .where(F.col("window_duration_minutes") == minutes)
        .agg(F.min("window_date").alias("a"), F.max("window_date").alias("b"))
        .first()
    )
    if bounds["a"] is None:
        raise dg.Failure(description=f"no {minutes}-minute features in {table} yet: materialize the feature assets first")
    return bounds["a"].isoformat(), bounds["b"].isoformat()


@dg.asset(
    group_name="training",
    kinds={"spark", "delta"},
    partitions_def=model_partitions,
    # Every model reads whatever days its date range names: all partitions of its inputs.
    deps=[dg.AssetDep(a, partition_mapping=dg.AllPartitionMapping()) for a in feature_assets] + [device_registry, maintenance_events],
    pool=f"delta_{TRAINING_TABLE}",
    description=(
        "A model's training set on the feature set version it is pinned to: devices sampled over a date range (a share, a time "
        "stride, class balance: recorded with the set), labelled from maintenance events, with point-in-time features, built "
        "and written in Spark; rows record the model, the version and the Delta versions read."
    ),
)
def training_dataset(
    context: dg.AssetExecutionContext, config: TrainingDatasetConfig, delta: DeltaTables, feature_store: FeatureStoreResource
) -> dg.MaterializeResult:
    started = time.monotonic()
    model = feature_store.model(context.partition_key)
    if config.rebuild_snapshot is not None:
        return _rebuild(context, delta, model, config.rebuild_snapshot, started)
    first, last = _feature_days(delta, feature_store.features_table(model.feature_set_version), model.window_minutes)
    start = datetime.fromisoformat(config.start or first).replace(tzinfo=UTC)
    end = datetime.fromisoformat(config.end or last).replace(tzinfo=UTC) + timedelta(days=1)
    as_of = datetime.fromisoformat(config.as_of) if config.as_of else datetime.now(UTC)
    if as_of.tzinfo is None:
        raise dg.Failure(description=f"as_of {config.as_of!r} has no offset: add one, e.g. {config.as_of}+00:00")
    registry = delta.read(REGISTRY_TABLE)
    # Without maintenance events every label would be 0: a training set that looks valid and is not.
    if not delta.exists(MAINTENANCE_TABLE):
        raise dg.Failure(
            description=f"no {MAINTENANCE_TABLE} table yet: materialize maintenance_events first; without it every label would be 0"
        )
    maintenance_version = delta.version(MAINTENANCE_TABLE)
    events = delta.read(MAINTENANCE_TABLE, version=maintenance_version)
    # Built in Spark end to end and written from the executors: memory does not grow with the range.
    entities = sample_entities_spark(registry, start, end, model.sample_every, config.device_share, config.sample_stride, config.seed)
    labelled = balance_labels(
        label_entities_spark(entities, events, model.label_horizon, model.label_events), config.negatives_per_positive, config.seed
    )
    store = OfflineStore(tables_root=delta.base(), feature_set_version=model.feature_set_version)
    features_version = store.table_version(as_of)
    joined = store.get_historical_features(
        labelled, list(model.features), model.window_minutes, tolerance=model.tolerance, as_of=as_of, ordered=False
    )
    frame = training_rows(joined, model, as_of, features_version, maintenance_version)
    table = training_table(model.name, model.feature_set_version)
    write = delta.overwrite(frame, table, run_id=context.run_id)
    return dg.MaterializeResult(
        metadata=_written(context, delta, model, write)
        | {
            "features_delta_version": features_version,
            "maintenance_delta_version": maintenance_version,
            "date_range": f"{start.date()} .. {(end - timedelta(days=1)).date()}",
            "features_as_of": as_of.isoformat(),
            "sampling": dg.MetadataValue.json(
                {
                    "device_share": config.device_share,
                    "sample_stride": config.sample_stride,
                    "every": str(model.sample_every * config.sample_stride),
                    "negatives_per_positive": config.negatives_per_positive,
                    "seed": config.seed,
                }
            ),
            "seconds": round(time.monotonic() - started, 2),
        }
    )


def _written(context: dg.AssetExecutionContext, delta: DeltaTables, model, write: DeltaWrite) -> dict:
    """What a training set's metadata says of the rows it wrote, whichever way it was built."""
    counts = (
        delta.read(write.table, version=write.version)
        .agg(
            F.count("*").alias("rows"),
            F.coalesce(F.sum("label"), F.lit(0)).alias("positives"),
            F.count("feature_window_end").alias("matched"),
            F.countDistinct("device_id").alias("devices"),
        )
        .first()
    )
    rows, positives, matched = counts["rows"], int(counts["positives"]), counts["matched"]
    context.log.info(f"{model.name}: {rows:,} rows, {positives} positive, {matched:,} with features")
    return write.metadata() | {
        **_line(model),
        "window_minutes": model.window_minutes,
        "devices": counts["devices"],
        "rows": rows,
        "positives": positives,
        "label_rate": round(positives / rows, 4) if rows else 0.0,
        "rows_without_features": rows - matched,
        "feature_list": dg.MetadataValue.json(list(model.features)),
    }


def _rebuild(context: dg.AssetExecutionContext, delta: DeltaTables, model, snapshot_version: int, started: float) -> dg.MaterializeResult:
    """The training set of a promoted snapshot, rebuilt from its pin and written as the model's training set."""
    try:
        frame = rebuild_training_set(delta, model, snapshot_version)
    except PinError as exc:
        raise dg.Failure(description=str(exc)) from exc
    recorded = frame.select(
        F.unix_micros("features_as_of").alias("as_of_us"), "features_delta_version", "maintenance_delta_version"
    ).first()
    write = delta.overwrite(frame, training_table(model.name, model.feature_set_version), run_id=context.run_id)
    return dg.MaterializeResult(
        metadata=_written(context, delta, model, write)
        | {
            "rebuilt_from_pin_of_snapshot": snapshot_version,
            "features_delta_version": recorded["features_delta_version"],
            "maintenance_delta_version": recorded["maintenance_delta_version"],
            "features_as_of": _utc_iso(recorded["as_of_us"]),
            "seconds": round(time.monotonic() - started, 2),
        }
    )


@dg.asset(
    group_name="training",
    kinds={"pandas", "delta"},
    partitions_def=model_partitions,
    deps=[training_dataset],
    pool=f"delta_{REFERENCE_TABLE}",
    description=(
        "A model's reference snapshot of its training features (per feature mean, std, min, max, percentiles, null "
        "fraction, PSI bins) and the anomaly score's references (the fleet's, and each device's own normal fitted on "
        "its healthy windows, in `device_reference_models`): a JSON artifact and a Delta row, numbered per model and "
        "feature set version. Not a baseline until promoted (`promoted_reference`)."
    ),
)
def feature_reference_snapshot(
    context: dg.AssetExecutionContext, delta: DeltaTables, feature_store: FeatureStoreResource
) -> dg.MaterializeResult:
    model = feature_store.model(context.partition_key)
    source = training_table(model.name, model.feature_set_version)
    if not delta.exists(source):
        raise dg.Failure(
            description=f"no training set {source} yet: materialize training_dataset ({model.name}) on {model.feature_set_version} first"
        )
    training_version = delta.version(source)
    training_rows = delta.read(source, version=training_version)
    totals = training_rows.agg(
        F.count("*").alias("rows"),
        F.countDistinct("device_id").alias("devices"),
        F.min(F.unix_micros("feature_window_end")).alias("first_end"),
        F.max(F.unix_micros("feature_window_end")).alias("last_end"),
    ).first()
    if not totals["rows"]:
        raise dg.Failure(description=f"the {model.key} training set is empty: widen its date range or check the features")
    # The statistics and the fleet's reference from at most SNAPSHOT_SAMPLE_ROWS rows (a seeded uniform
    # sample above that: a year of hourly windows is tens of millions of rows, and quantiles, PSI bins and
    # a covariance of 10-odd features are as good from two million); counts and the range from all.
    share = min(1.0, SNAPSHOT_SAMPLE_ROWS / totals["rows"])
    sampled = training_rows if share >= 1.0 else training_rows.sample(fraction=share, seed=0)
    wanted = ("device_id", "label", "feature_window_end", *model.features, "features_delta_version", "maintenance_delta_version")
    training = sampled.select(*[c for c in wanted if c in training_rows.columns]).toPandas()
    healthy = training[(training["label"] == 0) & training["feature_window_end"].notna()]
    fleet = fit_reference(healthy, tuple(model.scored_features))
    if fleet is None:
        raise dg.Failure(
            description=f"the {model.key} training set has {len(healthy):,} healthy windows with features: too few to fit the "
            f"fleet's anomaly reference (at least {MIN_DEVICE_WINDOWS}); widen its date range",
        )
    version = next_snapshot_version(delta, model)
    # The devices' own references first: a snapshot row is only written once what it names exists.
    _, own_references = write_device_references(
        delta, model, version, fitted_device_references(training_rows, model), run_id=context.run_id
    )
    snapshot = ReferenceSnapshot(
        model=model.name,
        feature_set_version=model.feature_set_version,
        version=version,
        created_at=datetime.now(UTC).isoformat(),
        window_minutes=model.window_minutes,
        features=list(model.features),
        # A window covers [window_end - size, window_end): the features start with the earliest window's start.
        training_start=_utc_iso(totals["first_end"], minus=timedelta(minutes=model.window_minutes)),
        training_end=_utc_iso(totals["last_end"]),
        rows=totals["rows"],
        devices=totals["devices"],
        statistics={name: feature_statistics(training[name]) for name in model.features},
        statistics_rows=len(training),
        read_versions={source: training_version, **_training_inputs(training)},
        fleet_reference=fleet.to_dict(),
        device_references=own_references,
    )
    artifact, write = write_snapshot(delta, snapshot, run_id=context.run_id)
    baseline = promoted(delta, model)
    statistics = [
        {
            "feature": n,
            **{k: _number(s[k]) for k in ("mean", "std", "min", "p5", "p50", "p95", "max")},
            "null_fraction": round(float(s["null_fraction"]), 4),
        }
        for n, s in snapshot.statistics.items()
    ]
    return dg.MaterializeResult(
        metadata=write.metadata()
        | {
            **_line(model),
            "snapshot_version": snapshot.version,
            "promoted_snapshot_version": baseline[1].version if baseline else None,
            "next_step": f"promote it: materialize promoted_reference ({model.name}) with snapshot_version {snapshot.version}",
            "artifact": dg.MetadataValue.path(str(artifact)),
            "training_range": f"{snapshot.training_start} .. {snapshot.training_end}",
            "read_versions": dg.MetadataValue.json(snapshot.read_versions),
            "devices": snapshot.devices,
            "devices_with_own_reference": own_references,
            "devices_on_fleet_reference": snapshot.devices - own_references,
            "fleet_reference_windows": fleet.windows,
            "rows": snapshot.rows,
            "statistics_rows": snapshot.statistics_rows,
            "statistics": table_metadata(statistics, columns=["feature", "mean", "std", "min", "p5", "p50", "p95", "max", "null_fraction"]),
        }
    )


# The most training rows the snapshot's statistics and fleet reference are computed from (held in pandas).
SNAPSHOT_SAMPLE_ROWS = 2_000_000


def _utc_iso(micros: int | None, minus: timedelta = timedelta(0)) -> str | None:
    """Microseconds since the epoch (what `unix_micros` returns, whatever the machine's time zone) as
    ISO-8601 UTC, less `minus`."""
    return None if micros is None else (datetime.fromtimestamp(micros / 1_000_000, UTC) - minus).isoformat()


def _line(model) -> dict[str, str]:
    """The model and feature set version a materialization belongs to, for its metadata."""
    return {"model": model.name, "feature_set_version": model.feature_set_version}


def _training_inputs(training: pd.DataFrame) -> dict[str, int]:
    """The Delta versions the training set itself read (recorded in its rows)."""
    out = {}
    for column, name in (("features_delta_version", "features"), ("maintenance_delta_version", MAINTENANCE_TABLE)):
        if column in training and training[column].notna().any():
            out[name] = int(training[column].dropna().iloc[0])
    return out


class PromotionConfig(dg.Config):
    snapshot_version: int | None = Field(
        default=None, ge=1, description="The snapshot to make the model's baseline; unset: its latest. An older one rolls back."
    )
    promoted_by: str | None = Field(default=None, description="Who promotes it; unset: the run's `user` tag, else the OS user running it.")
    reason: str = Field(default="", description="Why, for whoever reads the promotion history later.")


@dg.asset(
    group_name="training",
    kinds={"delta"},
    partitions_def=model_partitions,
    deps=[feature_reference_snapshot],
    pool=f"delta_{PROMOTIONS_TABLE}",
    description=(
        "Which reference snapshot is a model's baseline for drift reports and anomaly scores: each materialization "
        "promotes one snapshot (config `snapshot_version`, unset the latest) with who, when and why, and pins its training "
        "set's inputs (`training_pins`) so the set can be rebuilt past history retention; promoting an older snapshot "
        "rolls back. Never automatic."
    ),
)
def promoted_reference(
    context: dg.AssetExecutionContext, config: PromotionConfig, delta: DeltaTables, feature_store: FeatureStoreResource
) -> dg.MaterializeResult:
    model = feature_store.model(context.partition_key)
    snapshot = read_snapshot(delta, model, config.snapshot_version)
    if snapshot is None:
        which = f"snapshot v{config.snapshot_version}" if config.snapshot_version else "any snapshot"
        raise dg.Failure(
            description=f"{model.key} has no {which} in {REFERENCE_TABLE}/{model.feature_set_version}: materialize feature_reference_snapshot ({model.name}) first"
        )
    # Its training set's inputs first: a baseline that could not be rebuilt later is not promoted.
    source = training_table(model.name, model.feature_set_version)
    if source not in snapshot.read_versions:
        raise dg.Failure(description=f"snapshot v{snapshot.version} of {model.key} records no version of {source}: nothing to pin")
    try:
        pinned = pin_training_set(delta, model, snapshot.version, snapshot.read_versions[source], run_id=context.run_id)
    except PinError as exc:
        raise dg.Failure(description=str(exc)) from exc
    before = promoted(delta, model)
    promotion = Promotion(
        model=model.name,
        feature_set_version=model.feature_set_version,
        snapshot_version=snapshot.version,
        promoted_by=config.promoted_by or context.run.tags.get("user") or getpass.getuser(),
        promoted_at=datetime.now(UTC),
        reason=config.reason,
        previous_snapshot_version=before[1].version if before else None,
        run_id=context.run_id,
    )
    write = record_promotion(delta, promotion)
    history = promotions(delta, model)
    verb = "rolled back to" if before and snapshot.version < before[1].version else "promoted"
    context.log.info(f"{model.key}: {verb} reference snapshot v{snapshot.version} (was {f'v{before[1].version}' if before else 'none'})")
    return dg.MaterializeResult(
        metadata=write.metadata()
        | {
            **_line(model),
            "snapshot_version": snapshot.version,
            "previous_snapshot_version": promotion.previous_snapshot_version,
            "promoted_by": promotion.promoted_by,
            "promoted_at": promotion.promoted_at.isoformat(),
            "reason": promotion.reason,
            "training_range": f"{snapshot.training_start} .. {snapshot.training_end}",
            "pinned_entities": pinned["entities"],
            "pinned_windows": pinned["windows"],
            "rebuild": f"materialize training_dataset ({model.name}) with rebuild_snapshot {snapshot.version}",
            "history": table_metadata(
                [
                    {
                        "promoted_at": p.promoted_at.isoformat(),
                        "snapshot_version": p.snapshot_version,
                        "promoted_by": p.promoted_by,
                        "reason": p.reason,
                    }
                    for p in reversed(history[-20:])
                ],
                columns=["promoted_at", "snapshot_version", "promoted_by", "reason"],
            ),
        }
    )


def _number(value) -> float | None:
    return None if value is None else float(f"{value:.4g}")


training_assets = [training_dataset, feature_reference_snapshot, promoted_reference]
