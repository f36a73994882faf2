"""`anomaly_scores` (daily): the baseline scorer on each device's 1-day features against the
active reference snapshot of `device_health_1d`. The latest score per device feeds
`latest_anomaly_score` on the `Device` object."""

import time
from datetime import datetime, timezone

import dagster as dg
import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from fs_assets.features.assets import feature_assets
from fs_assets.monitoring.anomaly import SCORED_FEATURES, score_windows
from fs_assets.ontology.device_object import ANOMALY_SCORES_TABLE
from fs_assets.partitions import daily_partitions
from fs_assets.training.assets import feature_reference_snapshot
from fs_assets.training.models import DEVICE_HEALTH_1D
from fs_assets.training.reference import active_snapshot
from fs_resources.delta import DeltaTables
from fs_resources.feature_store import FeatureStoreResource
from fs_resources.spark import DeltaSparkResource

(device_features_1d,) = [a for a in feature_assets if a.key.path[-1] == "device_features_1d"]
SCORING_MODEL = DEVICE_HEALTH_1D

SCORES_SCHEMA = (
    "device_id string, window_start timestamp, window_end timestamp, anomaly_score double, top_feature string, "
    "top_z double, features_scored long, model string, snapshot_version int, scored_at timestamp, window_date date"
)


@dg.asset(
    group_name="monitoring",
    kinds={"pandas", "delta"},
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[device_features_1d, dg.AssetDep(feature_reference_snapshot, partition_mapping=dg.AllPartitionMapping())],
    pool=f"delta_{ANOMALY_SCORES_TABLE}",
    description=(
        "Daily anomaly score per device: root mean square of robust z-scores (median, IQR) of key 1-day features "
        f"against the active `{SCORING_MODEL.name}` reference snapshot; `top_feature` says which moved most."
    ),
)
def anomaly_scores(context: dg.AssetExecutionContext, spark: DeltaSparkResource, delta: DeltaTables, feature_store: FeatureStoreResource) -> dg.MaterializeResult:
    started = time.monotonic()
    session = spark.spark_session
    days = list(context.partition_keys)
    snapshot = active_snapshot(session, delta, SCORING_MODEL.name)
    if snapshot is None:
        raise dg.Failure(description=f"no reference snapshot for {SCORING_MODEL.name} yet: materialize training_dataset and feature_reference_snapshot (partition {SCORING_MODEL.name}) first")
    windows = (
        delta.read(session, feature_store.features_table())
        .where((F.col("window_duration_minutes") == SCORING_MODEL.window_minutes) & F.col("window_date").isin(days))
        .select("device_id", "window_start", "window_end", "window_date", *SCORED_FEATURES)
        .toPandas()
    )
    scores = windows[["device_id", "window_start", "window_end"]].join(score_windows(windows, snapshot.statistics))
    scores["model"] = SCORING_MODEL.name
    scores["snapshot_version"] = snapshot.version
    scores["scored_at"] = datetime.now(timezone.utc)
    scores["window_date"] = windows["window_date"]
    columns = [c.split()[0] for c in SCORES_SCHEMA.split(", ")]
    records = [tuple(_plain(v) for v in row) for row in scores[columns].astype(object).itertuples(index=False, name=None)]
    frame = session.createDataFrame(records, SCORES_SCHEMA)
    write = delta.replace_partitions(session, frame, ANOMALY_SCORES_TABLE, {"window_date": days})
    top = scores.sort_values("anomaly_score", ascending=False).head(10)
    return dg.MaterializeResult(
        metadata=write.metadata()
        | {
            "model": SCORING_MODEL.name,
            "snapshot_version": snapshot.version,
            "devices_scored": int(scores["anomaly_score"].notna().sum()),
            "median_score": float(scores["anomaly_score"].median()) if len(scores) else 0.0,
            "highest": dg.MetadataValue.md(
                "| device | day | score | top feature | z |\n|---|---|---|---|---|\n"
                + "\n".join(f"| {r.device_id} | {r.window_date} | {r.anomaly_score:.2f} | {r.top_feature} | {r.top_z:+.1f} |" for r in top.itertuples() if r.anomaly_score == r.anomaly_score)
            ),
            "seconds": round(time.monotonic() - started, 2),
        }
    )


def _plain(value):
    """pandas scalars to what Spark's row conversion takes: NaN/NaT to NULL, Timestamp to datetime."""
    if value is None or (isinstance(value, float) and value != value) or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.integer):
        return int(value)
    return value


monitoring_assets = [anomaly_scores]
