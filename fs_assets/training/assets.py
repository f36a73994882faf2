"""`training_dataset` and `feature_reference_snapshot`: one partition per model (fs_domain/models.py).

The training set is built with the same `OfflineStore.get_historical_features` ML scientists call
from a notebook, as of a recorded processing time, so rebuilding it later with that `as_of` gives
the same rows even after days were recomputed. The reference snapshot is the model's memory of
its training features: drift reports and anomaly scores compare against the active (latest) one.
"""

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
from fs_assets.training.datasets import feature_statistics, label_entities, sample_entities
from fs_assets.training.reference import ReferenceSnapshot, next_snapshot_version, write_snapshot
from fs_domain.models import MODELS
from fs_domain.tables import MAINTENANCE_TABLE, REFERENCE_TABLE, REGISTRY_TABLE, TRAINING_TABLE
from fs_resources.delta import DeltaTables
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
    kinds={"pandas", "delta"},
    partitions_def=model_partitions,
    # Every model reads whatever days its date range names: all partitions of its inputs.
    deps=[dg.AssetDep(a, partition_mapping=dg.AllPartitionMapping()) for a in feature_assets] + [device_registry, maintenance_events],
    pool=f"delta_{TRAINING_TABLE}",
    description="A model's training set: every device sampled over a date range, labelled from maintenance events, with point-in-time features.",
)
def training_dataset(
    context: dg.AssetExecutionContext, config: TrainingDatasetConfig, delta: DeltaTables, feature_store: FeatureStoreResource
) -> dg.MaterializeResult:
    started = time.monotonic()
    model = MODELS[context.partition_key]
    first, last = _feature_days(delta, feature_store.features_table(), model.window_minutes)
    start = datetime.fromisoformat(config.start or first).replace(tzinfo=UTC)
    end = datetime.fromisoformat(config.end or last).replace(tzinfo=UTC) + timedelta(days=1)
    as_of = datetime.fromisoformat(config.as_of) if config.as_of else datetime.now(UTC)
    if as_of.tzinfo is None:
        raise dg.Failure(description=f"as_of {config.as_of!r} has no offset: add one, e.g. {config.as_of}+00:00")
    devices = [r["device_id"] for r in delta.read(REGISTRY_TABLE).select("device_id").collect()]
    # Without maintenance events every label would be 0: a training set that looks valid and is not.
    if not delta.exists(MAINTENANCE_TABLE):
        raise dg.Failure(
            description=f"no {MAINTENANCE_TABLE} table yet: materialize maintenance_events first; without it every label would be 0"
        )
    events = delta.read(MAINTENANCE_TABLE).toPandas()
    entities = label_entities(sample_entities(devices, start, end, model.sample_every), events, model.label_horizon, model.label_events)
    store = OfflineStore(tables_root=delta.base(), feature_set_version=feature_store.version())
    dataset = store.get_historical_features(entities, list(model.features), model.window_minutes, tolerance=model.tolerance, as_of=as_of)
    dataset.insert(0, "model", model.name)
    dataset["features_as_of"] = pd.Timestamp(as_of).tz_convert("UTC")
    table = f"{TRAINING_TABLE}/{model.name}"
    frame = delta.session.createDataFrame(dataset.astype({c: "float64" for c in model.features if str(dataset[c].dtype) == "Int64"}))
    write = delta.overwrite(frame, table, run_id=context.run_id)
    matched = int(dataset["feature_window_end"].notna().sum())
    context.log.info(f"{model.name}: {len(dataset):,} rows, {int(dataset['label'].sum())} positive, {matched:,} with features")
    return dg.MaterializeResult(
        metadata=write.metadata()
        | {
            "model": model.name,
            "window_minutes": model.window_minutes,
            "date_range": f"{start.date()} .. {(end - timedelta(days=1)).date()}",
            "features_as_of": as_of.isoformat(),
            "devices": len(devices),
            "positives": int(dataset["label"].sum()),
            "label_rate": round(float(dataset["label"].mean()), 4) if len(dataset) else 0.0,
            "rows_without_features": len(dataset) - matched,
            "feature_list": dg.MetadataValue.json(list(model.features)),
            "seconds": round(time.monotonic() - started, 2),
        }
    )


@dg.asset(
    group_name="training",
    kinds={"pandas", "delta"},
    partitions_def=model_partitions,
    deps=[training_dataset],
    pool=f"delta_{REFERENCE_TABLE}",
    description="A model's reference snapshot of its training features (per feature mean, std, min, max, percentiles, null fraction, PSI bins); a JSON artifact and a Delta row, versioned per model.",
)
def feature_reference_snapshot(context: dg.AssetExecutionContext, delta: DeltaTables) -> dg.MaterializeResult:
    model = MODELS[context.partition_key]
    training = delta.read(f"{TRAINING_TABLE}/{model.name}").toPandas()
    if training.empty:
        raise dg.Failure(description=f"the {model.name} training set is empty: widen its date range or check the features")
    window_end = pd.to_datetime(training["feature_window_end"]).dropna()
    snapshot = ReferenceSnapshot(
        model=model.name,
        version=next_snapshot_version(delta, model.name),
        created_at=datetime.now(UTC).isoformat(),
        window_minutes=model.window_minutes,
        features=list(model.features),
        training_start=window_end.min().isoformat() if len(window_end) else None,
        training_end=window_end.max().isoformat() if len(window_end) else None,
        rows=len(training),
        devices=int(training["device_id"].nunique()),
        statistics={name: feature_statistics(training[name]) for name in model.features},
    )
    artifact, write = write_snapshot(delta, snapshot)
    statistics = [
        {
            "feature": n,
            **{k: _number(s[k]) for k in ("mean", "std", "p5", "p50", "p95")},
            "null_fraction": round(float(s["null_fraction"]), 4),
        }
        for n, s in snapshot.statistics.items()
    ]
    return dg.MaterializeResult(
        metadata=write.metadata()
        | {
            "model": model.name,
            "snapshot_version": snapshot.version,
            "artifact": dg.MetadataValue.path(str(artifact)),
            "training_range": f"{snapshot.training_start} .. {snapshot.training_end}",
            "devices": snapshot.devices,
            "rows": snapshot.rows,
            "statistics": table_metadata(statistics, columns=["feature", "mean", "std", "p5", "p50", "p95", "null_fraction"]),
        }
    )


def _number(value) -> float | None:
    return None if value is None else float(f"{value:.4g}")


training_assets = [training_dataset, feature_reference_snapshot]
