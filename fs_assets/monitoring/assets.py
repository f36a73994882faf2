"""`anomaly_scores` (daily): the baseline scorer on each device's 1-day features against the
active reference snapshot of `device_health_1d`. The latest score per device feeds
`latest_anomaly_score` on the `Device` object."""

import time
from datetime import UTC, datetime

import dagster as dg
import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from fs_assets.features.assets import FEATURES_AUTOMATION, device_features_1d
from fs_assets.freshness import DAILY_MONITORING_FRESHNESS
from fs_assets.metadata import table_metadata
from fs_assets.monitoring.anomaly import SCORED_FEATURES, score_windows
from fs_assets.partitions import daily_backfill_policy, daily_partitions
from fs_assets.training.assets import feature_reference_snapshot
from fs_assets.training.reference import active_snapshot
from fs_domain.models import DEVICE_HEALTH_1D
from fs_domain.tables import ANOMALY_SCORES_TABLE, DRIFT_TABLE
from fs_resources.delta import DeltaTables
from fs_resources.feature_store import FeatureStoreResource

SCORING_MODEL = DEVICE_HEALTH_1D

SCORES_SCHEMA = (
    "device_id string, window_start timestamp, window_end timestamp, anomaly_score double, top_feature string, "
    "top_z double, features_scored long, model string, snapshot_version int, scored_at timestamp, window_date date"
)


def _active_reference(delta: DeltaTables, model):
    snapshot = active_snapshot(delta, model.name)
    if snapshot is None:
        raise dg.Failure(
            description=f"no reference snapshot for {model.name} yet: materialize training_dataset and feature_reference_snapshot (partition {model.name}) first"
        )
    return snapshot


def _day_windows(delta: DeltaTables, feature_store: FeatureStoreResource, model, days: list[str], columns: list[str]) -> pd.DataFrame:
    """The feature windows of the model's size that start on `days`."""
    return (
        delta.read(feature_store.features_table())
        .where((F.col("window_duration_minutes") == model.window_minutes) & F.col("window_date").isin(days))
        .select(*columns)
        .toPandas()
    )


# Both daily monitoring assets: one run for any range of days, recomputed after the day's 1-day
# features change (late data), once every model has a reference snapshot (before that a dep is
# missing and nothing is requested).
DAILY_MONITORING = dict(
    automation_condition=FEATURES_AUTOMATION,
    group_name="monitoring",
    kinds={"pandas", "delta"},
    partitions_def=daily_partitions,
    backfill_policy=daily_backfill_policy,
    deps=[device_features_1d, dg.AssetDep(feature_reference_snapshot, partition_mapping=dg.AllPartitionMapping())],
    freshness_policy=DAILY_MONITORING_FRESHNESS,
)


@dg.asset(
    **DAILY_MONITORING,
    pool=f"delta_{ANOMALY_SCORES_TABLE}",
    description=(
        "Daily anomaly score per device: root mean square of robust z-scores (median, IQR) of key 1-day features "
        f"against the active `{SCORING_MODEL.name}` reference snapshot; `top_feature` says which moved most."
    ),
)
def anomaly_scores(context: dg.AssetExecutionContext, delta: DeltaTables, feature_store: FeatureStoreResource) -> dg.MaterializeResult:
    started = time.monotonic()
    session = delta.session
    days = list(context.partition_keys)
    snapshot = _active_reference(delta, SCORING_MODEL)
    windows = _day_windows(
        delta, feature_store, SCORING_MODEL, days, ["device_id", "window_start", "window_end", "window_date", *SCORED_FEATURES]
    )
    scores = windows[["device_id", "window_start", "window_end"]].join(score_windows(windows, snapshot.statistics))
    scores["model"] = SCORING_MODEL.name
    scores["snapshot_version"] = snapshot.version
    scores["scored_at"] = datetime.now(UTC)
    scores["window_date"] = windows["window_date"]
    columns = [c.split()[0] for c in SCORES_SCHEMA.split(", ")]
    records = [tuple(_plain(v) for v in row) for row in scores[columns].astype(object).itertuples(index=False, name=None)]
    frame = session.createDataFrame(records, SCORES_SCHEMA)
    write = delta.replace_partitions(frame, ANOMALY_SCORES_TABLE, {"window_date": days}, run_id=context.run_id)
    top = scores.sort_values("anomaly_score", ascending=False).head(10)
    return dg.MaterializeResult(
        metadata=write.metadata()
        | {
            "model": SCORING_MODEL.name,
            "snapshot_version": snapshot.version,
            "devices_scored": int(scores["anomaly_score"].notna().sum()),
            "median_score": float(scores["anomaly_score"].median()) if len(scores) else 0.0,
            "highest": table_metadata(
                [
                    {
                        "device": r.device_id,
                        "day": str(r.window_date),
                        "score": round(float(r.anomaly_score), 2),
                        "top_feature": r.top_feature,
                        "z": round(float(r.top_z), 1),
                    }
                    for r in top.itertuples()
                    if r.anomaly_score == r.anomaly_score
                ],
                columns=["device", "day", "score", "top_feature", "z"],
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


DRIFT_MODEL = DEVICE_HEALTH_1D
DRIFT_SCHEMA = (
    "feature string, devices long, mean double, std double, p5 double, p50 double, p95 double, null_fraction double, "
    "reference_mean double, reference_null_fraction double, psi double, psi_status string, null_escalation boolean, "
    "fleet_wide_event boolean, model string, snapshot_version int, computed_at timestamp, report_date date"
)


@dg.asset(
    **DAILY_MONITORING,
    pool=f"delta_{DRIFT_TABLE}",
    description=(
        f"Daily drift of every 1-day feature against the active `{DRIFT_MODEL.name}` reference: mean, std, p5/p50/p95, "
        "null fraction and PSI with its status (investigate >= 0.1, significant > 0.25); a chart in the metadata."
    ),
)
def feature_drift_report(
    context: dg.AssetExecutionContext, delta: DeltaTables, feature_store: FeatureStoreResource
) -> dg.MaterializeResult:
    from fs_assets.monitoring.drift import chart_markdown, drift_chart_png, drift_rows, fleet_wide

    session = delta.session
    days = list(context.partition_keys)
    snapshot = _active_reference(delta, DRIFT_MODEL)
    windows = _day_windows(delta, feature_store, DRIFT_MODEL, days, ["window_date", *snapshot.features])
    reports = []
    for day in days:
        of_day = windows[windows["window_date"].astype(str) == day]
        if of_day.empty:
            context.log.warning(f"{day}: no 1-day features; no drift report for it")
            continue
        rows = drift_rows(of_day, snapshot.statistics, snapshot.features)
        rows["fleet_wide_event"] = fleet_wide(rows)
        rows["report_date"] = datetime.fromisoformat(day).date()
        reports.append(rows)
    if not reports:
        raise dg.Failure(description=f"no 1-day features for {', '.join(days)}: materialize device_features_1d for these days first")
    report = pd.concat(reports, ignore_index=True)
    report["model"] = DRIFT_MODEL.name
    report["snapshot_version"] = snapshot.version
    report["computed_at"] = datetime.now(UTC)
    columns = [c.split()[0] for c in DRIFT_SCHEMA.split(", ")]
    records = [tuple(_plain(v) for v in row) for row in report[columns].astype(object).itertuples(index=False, name=None)]
    write = delta.replace_partitions(
        session.createDataFrame(records, DRIFT_SCHEMA),
        DRIFT_TABLE,
        {"report_date": sorted({r[-1] for r in records})},
        run_id=context.run_id,
    )

    latest = reports[-1]
    latest_day = str(latest["report_date"].iat[0])
    moved = report[(report["psi_status"] != "ok") | report["null_escalation"]].sort_values("psi", ascending=False)
    moved_rows = [
        {
            "day": str(r.report_date),
            "feature": r.feature,
            "psi": _rounded(r.psi),
            "status": r.psi_status,
            "nulls_up": bool(r.null_escalation),
            "null_fraction": _rounded(r.null_fraction),
            "reference_null_fraction": _rounded(r.reference_null_fraction),
            "mean": _rounded(r.mean),
            "reference_mean": _rounded(r.reference_mean),
        }
        for r in moved.itertuples()
    ]
    fleet_days = sorted({str(d) for d in report.loc[report["fleet_wide_event"], "report_date"]})
    if fleet_days:
        context.log.warning(f"fleet-wide drift event on {', '.join(fleet_days)}: 5 or more features at PSI >= 0.1")
    chart = drift_chart_png(latest, f"PSI per feature, {latest_day}, against {DRIFT_MODEL.name} reference v{snapshot.version}")
    return dg.MaterializeResult(
        metadata=write.metadata()
        | {
            "psi_chart": dg.MetadataValue.md(chart_markdown(chart, f"PSI per feature on {latest_day}")),
            "moved_features": table_metadata(
                moved_rows,
                columns=[
                    "day",
                    "feature",
                    "psi",
                    "status",
                    "nulls_up",
                    "null_fraction",
                    "reference_null_fraction",
                    "mean",
                    "reference_mean",
                ],
            ),
            "features_investigate": int((latest["psi_status"] == "investigate").sum()),
            "features_significant": int((latest["psi_status"] == "significant").sum()),
            "null_escalations": int(latest["null_escalation"].sum()),
            "fleet_wide_event_days": dg.MetadataValue.json(fleet_days),
            "max_psi": float(latest["psi"].max()) if latest["psi"].notna().any() else 0.0,
            "model": DRIFT_MODEL.name,
            "snapshot_version": snapshot.version,
        }
    )


def _rounded(value) -> float | None:
    return None if value is None or value != value else float(f"{float(value):.4g}")


monitoring_assets = [anomaly_scores, feature_drift_report]
