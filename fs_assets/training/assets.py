"""`training_dataset` and `feature_reference_snapshot`: one partition per model (fs_assets/training/models.py).

The training set is built with the same `OfflineStore.get_historical_features` ML scientists call
from a notebook, as of a recorded processing time, so rebuilding it later with that `as_of` gives
the same rows even after days were recomputed. The reference snapshot is the model's memory of
its training features: drift reports and anomaly scores compare against the active (latest) one.
"""

import time
from datetime import datetime, timedelta, timezone

import dagster as dg
import pandas as pd
from pydantic import Field
from pyspark.sql import functions as F

from fs_assets.features.assets import feature_assets
from fs_assets.ingest.assets import MAINTENANCE_TABLE, REGISTRY_TABLE, device_registry, maintenance_events
from fs_assets.training.datasets import feature_statistics, label_entities, sample_entities
from fs_assets.training.models import MODELS, model_partitions
from fs_assets.training.reference import REFERENCE_TABLE, ReferenceSnapshot, next_snapshot_version, write_snapshot
from fs_resources.delta import DeltaTables
from fs_resources.feature_store import FeatureStoreResource
from fs_resources.offline import OfflineStore
from fs_resources.spark import DeltaSparkResource

TRAINING_TABLE = "training_datasets"


class TrainingDatasetConfig(dg.Config):
    start: str | None = Field(default=None, description="First day (YYYY-MM-DD, UTC); unset: the first day with features of the model's window size.")
    end: str | None = Field(default=None, description="Last day (inclusive); unset: the last day with features.")
    as_of: str | None = Field(default=None, description="Processing time (ISO-8601 with offset) to read features as of; unset: now. Recorded either way.")


def _feature_days(session, delta: DeltaTables, table: str, minutes: int) -> tuple[str, str]:
    bounds = delta.read(session, table).where(F.col("window_duration_minutes") == minutes).agg(F.min("window_date").alias("a"), F.max("window_date").alias("b")).first()
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
    context: dg.AssetExecutionContext, config: TrainingDatasetConfig, spark: DeltaSparkResource, delta: DeltaTables, feature_store: FeatureStoreResource
) -> dg.MaterializeResult:
    started = time.monotonic()
    model = MODELS[context.partition_key]
    session = spark.spark_session
    first, last = _feature_days(session, delta, feature_store.features_table(), model.window_minutes)
    start = datetime.fromisoformat(config.start or first).replace(tzinfo=timezone.utc)
    end = datetime.fromisoformat(config.end or last).replace(tzinfo=timezone.utc) + timedelta(days=1)
    as_of = datetime.fromisoformat(config.as_of) if config.as_of else datetime.now(timezone.utc)
    if as_of.tzinfo is None:
        raise dg.Failure(description=f"as_of {config.as_of!r} has no offset: add one, e.g. {config.as_of}+00:00")
    devices = [r["device_id"] for r in delta.read(session, REGISTRY_TABLE).select("device_id").collect()]
    events = delta.read(session, MAINTENANCE_TABLE).toPandas() if delta.exists(session, MAINTENANCE_TABLE) else pd.DataFrame(columns=["device_id", "event_time", "event_type"])
    entities = label_entities(sample_entities(devices, start, end, model.sample_every), events, model.label_horizon, model.label_events)
    store = OfflineStore(tables_root=delta.base(), feature_set_version=feature_store.version())
    dataset = store.get_historical_features(entities, list(model.features), model.window_minutes, tolerance=model.tolerance, as_of=as_of)
    dataset.insert(0, "model", model.name)
    dataset["features_as_of"] = pd.Timestamp(as_of).tz_convert("UTC")
    table = f"{TRAINING_TABLE}/{model.name}"
    frame = session.createDataFrame(dataset.astype({c: "float64" for c in model.features if str(dataset[c].dtype) == "Int64"}))
    write = delta.overwrite(session, frame, table)
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
def feature_reference_snapshot(context: dg.AssetExecutionContext, spark: DeltaSparkResource, delta: DeltaTables) -> dg.MaterializeResult:
    model = MODELS[context.partition_key]
    session = spark.spark_session
    training = delta.read(session, f"{TRAINING_TABLE}/{model.name}").toPandas()
    if training.empty:
        raise dg.Failure(description=f"the {model.name} training set is empty: widen its date range or check the features")
    window_end = pd.to_datetime(training["feature_window_end"]).dropna()
    snapshot = ReferenceSnapshot(
        model=model.name,
        version=next_snapshot_version(session, delta, model.name),
        created_at=datetime.now(timezone.utc).isoformat(),
        window_minutes=model.window_minutes,
        features=list(model.features),
        training_start=window_end.min().isoformat() if len(window_end) else None,
        training_end=window_end.max().isoformat() if len(window_end) else None,
        rows=len(training),
        devices=int(training["device_id"].nunique()),
        statistics={name: feature_statistics(training[name]) for name in model.features},
    )
    artifact, write = write_snapshot(session, delta, snapshot)
    table = "| feature | mean | std | p5 | p50 | p95 | null |\n|---|---|---|---|---|---|---|\n" + "\n".join(
        f"| {n} | {_fmt(s['mean'])} | {_fmt(s['std'])} | {_fmt(s['p5'])} | {_fmt(s['p50'])} | {_fmt(s['p95'])} | {s['null_fraction']:.1%} |"
        for n, s in snapshot.statistics.items()
    )
    return dg.MaterializeResult(
        metadata=write.metadata()
        | {
            "model": model.name,
            "snapshot_version": snapshot.version,
            "artifact": dg.MetadataValue.path(str(artifact)),
            "training_range": f"{snapshot.training_start} .. {snapshot.training_end}",
            "devices": snapshot.devices,
            "rows": snapshot.rows,
            "statistics": dg.MetadataValue.md(table),
        }
    )


def _fmt(value) -> str:
    return "NULL" if value is None else f"{value:.4g}"


training_assets = [training_dataset, feature_reference_snapshot]
