"""`anomaly_scores` and `feature_drift_report`: every model, each day, on the feature set version it
is pinned to (its features, its promoted reference snapshot and its output table all of that
version), so a model validated on v2 is scored beside one still on v1 in the same run.

Each model is scored on its own window size (`device_health_1d` once a day per device,
`compressor_failure_1h` once an hour) against each device's own normal where the promoted snapshot
fitted one (`reference` says which was used; see docs/anomaly_scores.md), and each score says what
moved (`top_features`, `top_pair`) and how far to trust it: the window's
`reading_count` and `sensor_completeness`, how many inputs fell outside the reference's min/max,
and `reduced_confidence` when the inputs were sparse, stale (the window's clean readings changed
after its features were computed) or out of range. The latest `device_health_1d` score per device feeds
`latest_anomaly_score` on the `Device` object. Drift is measured over the active fleet only.
"""

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import functions as F

from fs_assets.features import touched
from fs_assets.features.assets import feature_assets
from fs_assets.features.windows import MICROS_PER_MINUTE, window_start
from fs_assets.freshness import DAILY_MONITORING_FRESHNESS
from fs_assets.ingest.assets import clean_sensor_readings, device_registry
from fs_assets.metadata import table_metadata
from fs_assets.partitions import daily_backfill_policy, daily_partitions
from fs_assets.training.anomaly import ReferenceModel, score_windows
from fs_assets.training.assets import promoted_reference
from fs_assets.training.reference import Promotion, ReferenceSnapshot, promoted, read_device_references
from fs_domain.features import WINDOWS_BY_MINUTES
from fs_domain.models import ANOMALY_THRESHOLD, MODEL_SPECS, SPARSE_COMPLETENESS, SPARSE_READING_SHARE, ModelSpec
from fs_domain.tables import ANOMALY_SCORES_TABLE, CLEAN_TABLE, DRIFT_TABLE, REGISTRY_TABLE, versioned
from fs_resources import change_feed
from fs_resources.delta import DeltaTables
from fs_resources.feature_store import FeatureStoreResource

SCORES_SCHEMA = (
    "device_id string, window_start timestamp, window_end timestamp, anomaly_score double, reference string, top_feature string, "
    "top_z double, top_features string, top_pair string, features_scored long, reading_count long, sensor_completeness double, inputs_out_of_range int, "
    "reduced_confidence boolean, confidence_notes string, model string, feature_set_version string, snapshot_version int, "
    "features_delta_version long, scored_at timestamp, window_date date"
)
# Why a score is reduced-confidence (comma-joined in `confidence_notes`).
SPARSE, STALE, OUT_OF_RANGE = "sparse", "stale", "out_of_range"


def _baselines(
    context, delta: DeltaTables, feature_store: FeatureStoreResource
) -> dict[str, dict[str, tuple[ModelSpec, Promotion, ReferenceSnapshot]]]:
    """Per feature set version, each model pinned to it with its promoted reference on it; a model
    without one is named and left out."""
    found, missing = {}, []
    for version in feature_store.versions():
        for model in feature_store.models_on(version).values():
            baseline = promoted(delta, model)
            if baseline is None:
                missing.append(model.key)
            else:
                found.setdefault(version, {})[model.name] = (model, *baseline)
    if missing:
        context.log.warning(f"no promoted reference for {', '.join(missing)}: left out until one is promoted on its pinned version")
    if not found:
        raise dg.Failure(
            description=(
                f"no model has a promoted reference snapshot on the version it is pinned to ({', '.join(missing)}): materialize "
                "training_dataset, feature_reference_snapshot and promoted_reference (one partition per model) first"
            ),
            metadata={"models_without_baseline": dg.MetadataValue.json(missing)},
        )
    return found


def _model_windows(delta: DeltaTables, table: str, version_read: int, model: ModelSpec, days: list[str], columns: list[str]):
    """The model's windows (its window size) that start on `days`, as a Spark frame of `columns`."""
    return (
        delta.read(table, version=version_read)
        .where((F.col("window_duration_minutes") == model.window_minutes) & F.col("window_date").isin(days))
        .select(*dict.fromkeys(columns))
    )


def _references(delta: DeltaTables, model: ModelSpec, snapshot: ReferenceSnapshot):
    """The fleet's reference and the devices' own that a promoted snapshot carries."""
    if snapshot.fleet_reference is None:
        raise dg.Failure(
            description=(
                f"{model.key}: the promoted reference snapshot v{snapshot.version} predates per-device anomaly references: "
                f"materialize feature_reference_snapshot ({model.name}) and promote the new snapshot (promoted_reference)"
            )
        )
    return ReferenceModel.from_dict(snapshot.fleet_reference), read_device_references(delta, model, snapshot.version)


def _latest_materialization(instance: dg.DagsterInstance, key: dg.AssetKey, day: str) -> float | None:
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=1).records
    return records[0].timestamp if records else None


def stale_days(instance: dg.DagsterInstance, days: list[str], minutes: int) -> list[str]:
    """Days whose clean readings were written again after their features of this window size:
    the features (and so any score of them) may miss readings."""
    features_key = dg.AssetKey(WINDOWS_BY_MINUTES[minutes].asset_name)
    out = []
    for day in days:
        clean_at = _latest_materialization(instance, clean_sensor_readings.key, day)
        features_at = _latest_materialization(instance, features_key, day)
        if clean_at is not None and features_at is not None and clean_at > features_at:
            out.append(day)
    return out


@dataclass(frozen=True)
class Staleness:
    """Which windows' features may miss readings: (device_id, window_start) of the windows whose clean
    readings changed after their features were computed, and the days judged whole instead."""

    windows: pd.DataFrame
    whole_days: frozenset[str]

    def mask(self, windows: pd.DataFrame) -> np.ndarray:
        keyed = windows[["device_id", "window_start"]].merge(self.windows.assign(_stale=True), on=["device_id", "window_start"], how="left")
        return keyed["_stale"].notna().to_numpy() | windows["window_date"].astype(str).isin(self.whole_days).to_numpy()


def stale_windows(instance: dg.DagsterInstance, delta: DeltaTables, days: list[str], minutes: int, version: str) -> Staleness:
    """The windows of `minutes` whose clean readings changed after their features were computed, read
    from the clean table's change feed since the version the day's features read. A day in progress
    keeps receiving readings for its open windows: those change no window already computed, so they
    make nothing stale. A day whose features recorded no clean version, or whose feed is gone, is
    judged whole (stale when its clean readings were written after its features)."""
    features_key = dg.AssetKey(WINDOWS_BY_MINUTES[minutes].asset_name)
    current = delta.version(CLEAN_TABLE)
    identity = change_feed.table_identity(delta, CLEAN_TABLE) if current is not None else None
    frames, whole = [], set()
    for day in days:
        prev = touched.previous_run(instance, features_key, day, version)
        if prev is None or identity is None or touched.feed_gone(delta, CLEAN_TABLE, prev, identity, current) is not None:
            whole.update(stale_days(instance, [day], minutes))
            continue
        if prev.clean_version >= current:
            continue
        start = window_start(F.col("ts"), minutes)
        computed = F.unix_micros(start) + F.lit(minutes * MICROS_PER_MINUTE) <= F.lit(int(prev.computed_at.timestamp() * 1_000_000))
        changed = delta.changes(CLEAN_TABLE, prev.clean_version + 1, current).where(F.col("reading_date") == F.lit(day).cast("date"))
        frames.append(changed.where(computed).select("device_id", start.alias("window_start")))
    keys = pd.DataFrame({"device_id": pd.Series(dtype=object), "window_start": pd.Series(dtype="datetime64[ns]")})
    if frames:
        union = frames[0]
        for frame in frames[1:]:
            union = union.unionByName(frame)
        found = union.distinct().toPandas()
        keys = found if len(found) else keys
    return Staleness(keys, frozenset(whole))


RANGE_MARGIN = 0.25  # of the reference's min-max width, on each side


def confidence(
    windows: pd.DataFrame, model: ModelSpec, statistics: dict[str, dict], stale: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """Per window: inputs outside the reference's range, reduced confidence, and why.

    Outside means beyond the reference's min/max by more than `RANGE_MARGIN` of its width: a new
    window falls just past the extremes of a few dozen reference windows by chance (of 50, one in 25
    per feature and side; with a model's twenty features, more than half of a healthy day's scores
    were flagged in the paging drill), while an input that far out is outside what the model saw."""
    out_of_range = np.zeros(len(windows), dtype="int64")
    for name in model.features:
        low, high = statistics.get(name, {}).get("min"), statistics.get(name, {}).get("max")
        if low is None or high is None:
            continue
        margin = RANGE_MARGIN * (high - low)
        low, high = low - margin, high + margin
        values = windows[name].to_numpy(dtype="float64", na_value=np.nan)
        with np.errstate(invalid="ignore"):
            out_of_range += ((values < low) | (values > high)).astype("int64")
    counts = windows["reading_count"].to_numpy(dtype="float64", na_value=0.0)
    completeness = windows["sensor_completeness"].to_numpy(dtype="float64", na_value=0.0)
    sparse = (counts < SPARSE_READING_SHARE * model.window_minutes) | (completeness < SPARSE_COMPLETENESS)
    old = np.asarray(stale, dtype=bool)
    notes = [
        ",".join(n for n, flag in ((SPARSE, a), (STALE, b), (OUT_OF_RANGE, c > 0)) if flag) or None
        for a, b, c in zip(sparse, old, out_of_range)
    ]
    return out_of_range, sparse | old | (out_of_range > 0), notes


def spark_rows(session, frame: pd.DataFrame, schema: str):
    """A pandas frame as a Spark frame of `schema`, through Arrow (NaN and NaT become NULL)."""
    columns = [c.split()[0] for c in schema.split(", ")]
    # An Arrow table goes to the JVM in batches (2.4 M hourly scores of the design fleet: ~4 s).
    return session.createDataFrame(pa.Table.from_pandas(frame[columns], preserve_index=False), schema)


def _monitoring_deps() -> list:
    windows = sorted({m.window_minutes for m in MODEL_SPECS})
    used = [a for a in feature_assets if any(a.key.path[-1] == WINDOWS_BY_MINUTES[w].asset_name for w in windows)]
    return [*used, device_registry, dg.AssetDep(promoted_reference, partition_mapping=dg.AllPartitionMapping())]


# Both daily monitoring assets: one run for any range of days, recomputed after the day's features
# change (late data), once every model has a promoted reference (before that a dep is missing and
# nothing is requested). A registry update or a promotion is read by the next run of each day but
# does not by itself re-request every day ever scored.
# Unlike the features, they do not wait for their inputs to be idle: on a live store today's
# features are recomputed run after run, and scores that waited for a gap waited 30 minutes and
# more behind them (a drifting sensor paged that late). A run reads the features' committed
# version; an update during it requests the next run, so at most one run of a day trails the newest
# features.
MONITORING_AUTOMATION = (
    dg.AutomationCondition.any_deps_updated()
    .ignore(dg.AssetSelection.assets(device_registry, promoted_reference))
    .since(dg.AutomationCondition.newly_requested() | dg.AutomationCondition.newly_updated())
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.in_progress()
).with_label("after its day's features change")

DAILY_MONITORING = dict(
    automation_condition=MONITORING_AUTOMATION,
    group_name="monitoring",
    kinds={"pandas", "delta"},
    partitions_def=daily_partitions,
    backfill_policy=daily_backfill_policy,
    deps=_monitoring_deps(),
    freshness_policy=DAILY_MONITORING_FRESHNESS,
)


@dg.asset(
    **DAILY_MONITORING,
    pool=f"delta_{ANOMALY_SCORES_TABLE}",
    description=(
        "Anomaly scores of every model on the feature set version it is pinned to, per device and window of the model's size: how "
        "far its scored features, and how they move together, are from the device's own normal (a multivariate reference "
        "fitted on its healthy windows, carried by the promoted reference snapshot), or from the fleet's when the device "
        "has none (`reference`); `top_features` and `top_pair` say what contributed most; `reduced_confidence` (with "
        "`confidence_notes`) when inputs were sparse, stale or outside the reference's min/max."
    ),
)
def anomaly_scores(context: dg.AssetExecutionContext, delta: DeltaTables, feature_store: FeatureStoreResource) -> dg.MaterializeResult:
    started = time.monotonic()
    days = list(context.partition_keys)
    scored_at = datetime.now(UTC)
    summary, top_rows, writes, all_scores = [], [], {}, []
    # Each model on the version it is pinned to: its windows from that version's features, its
    # scores into that version's table.
    for version, baselines in _baselines(context, delta, feature_store).items():
        table = feature_store.features_table(version)
        features_version = delta.version(table)
        frames = []
        for model, promotion, snapshot in baselines.values():
            scores, stale = _model_scores(context, delta, table, features_version, model, snapshot, days, scored_at)
            frames.append(scores)
            summary.append(
                {
                    "model": model.name,
                    "feature_set_version": version,
                    "window_minutes": model.window_minutes,
                    "snapshot_version": snapshot.version,
                    "promoted_by": promotion.promoted_by,
                    "scores": len(scores),
                    "reduced_confidence": int(scores["reduced_confidence"].sum()),
                    "on_fleet_reference": int((scores["reference"] == "fleet").sum()),
                    "above_threshold": int((scores["anomaly_score"] > ANOMALY_THRESHOLD).sum()),
                    "median_score": _rounded(scores["anomaly_score"].median()) if len(scores) else None,
                    "stale_days": ", ".join(sorted(stale)),
                }
            )
            for r in scores.sort_values("anomaly_score", ascending=False).head(5).itertuples():
                if r.anomaly_score == r.anomaly_score:
                    top_rows.append(
                        {
                            "model": model.name,
                            "device": r.device_id,
                            "window_start": str(r.window_start),
                            "score": round(float(r.anomaly_score), 2),
                            "reference": r.reference,
                            "top_features": r.top_features,
                            "top_pair": r.top_pair,
                            "reduced_confidence": bool(r.reduced_confidence),
                        }
                    )
        scores = pd.concat(frames, ignore_index=True)
        all_scores.append(scores)
        writes[version] = delta.replace_partitions(
            spark_rows(delta.session, scores, SCORES_SCHEMA),
            versioned(ANOMALY_SCORES_TABLE, version),
            {"window_date": days, "model": list(baselines)},
            run_id=context.run_id,
            inputs={table: features_version},
            # Tables written before scores named their reference and contributions gain those columns.
            properties={"mergeSchema": "true"},
        )
    scores = pd.concat(all_scores, ignore_index=True)
    return dg.MaterializeResult(
        metadata=_write_metadata(writes)
        | {
            "model_versions": dg.MetadataValue.json({r["model"]: r["feature_set_version"] for r in summary}),
            "anomaly_threshold": ANOMALY_THRESHOLD,
            "models": table_metadata(
                summary,
                columns=[
                    "model",
                    "feature_set_version",
                    "window_minutes",
                    "snapshot_version",
                    "promoted_by",
                    "scores",
                    "reduced_confidence",
                    "on_fleet_reference",
                    "above_threshold",
                    "median_score",
                    "stale_days",
                ],
            ),
            "devices_scored": int(scores.loc[scores["anomaly_score"].notna(), "device_id"].nunique()),
            "reduced_confidence": int(scores["reduced_confidence"].sum()),
            "highest": table_metadata(
                top_rows,
                columns=["model", "device", "window_start", "score", "reference", "top_features", "top_pair", "reduced_confidence"],
            ),
            "seconds": round(time.monotonic() - started, 2),
        }
    )


def _model_scores(
    context, delta: DeltaTables, table: str, features_version: int, model: ModelSpec, snapshot: ReferenceSnapshot, days, scored_at
):
    """One model's scores of the days' windows of its size, against its promoted snapshot's
    references, and the days holding windows whose features are stale."""
    keys = ["device_id", "window_start", "window_end", "window_date", "reading_count", "sensor_completeness"]
    windows = _model_windows(delta, table, features_version, model, days, [*keys, *model.features]).toPandas()
    staleness = stale_windows(context.instance, delta, days, model.window_minutes, model.feature_set_version)
    stale = staleness.mask(windows)
    fleet, devices = _references(delta, model, snapshot)
    scored = score_windows(windows, model.scored_features, fleet, devices)
    scored["top_features"] = scored["top_features"].map(lambda names: ", ".join(names) if names is not None and len(names) else None)
    scores = windows[keys].join(scored)
    scores["inputs_out_of_range"], scores["reduced_confidence"], scores["confidence_notes"] = confidence(
        windows, model, snapshot.statistics, stale
    )
    stale_days_seen = sorted(set(windows.loc[stale, "window_date"].astype(str)))
    return scores.assign(
        model=model.name,
        feature_set_version=model.feature_set_version,
        snapshot_version=snapshot.version,
        features_delta_version=features_version,
        scored_at=scored_at,
    ), stale_days_seen


def _write_metadata(writes: dict) -> dict:
    """The writes' metadata: one version's as it is; several, their rows added up and one line each."""
    if len(writes) == 1:
        ((version, write),) = writes.items()
        return write.metadata() | {"feature_set_version": version}
    rows = [
        {
            "feature_set_version": v,
            "delta_table": w.table,
            "delta_version": w.version,
            "rows_written": w.rows_written,
            "written_by_run": w.run_id or "-",
        }
        for v, w in writes.items()
    ]
    return {
        "dagster/row_count": sum(w.rows_written for w in writes.values()),
        "delta_writes": table_metadata(
            rows, columns=["feature_set_version", "delta_table", "delta_version", "rows_written", "written_by_run"]
        ),
    }


DRIFT_SCHEMA = (
    "feature string, devices long, mean double, std double, p5 double, p50 double, p95 double, null_fraction double, "
    "reference_mean double, reference_null_fraction double, psi double, psi_p_value double, psi_status string, null_escalation boolean, "
    "fleet_wide_event boolean, model string, feature_set_version string, window_minutes int, snapshot_version int, "
    "features_delta_version long, registry_delta_version long, computed_at timestamp, report_date date"
)


@dg.asset(
    **DAILY_MONITORING,
    pool=f"delta_{DRIFT_TABLE}",
    description=(
        "Daily drift of every model's features (its window size, the version it is pinned to) against its promoted "
        "reference, over the active fleet only: mean, std, p5/p50/p95, null fraction and PSI with its status "
        "(investigate >= 0.1, significant > 0.25); a chart per model in the metadata."
    ),
)
def feature_drift_report(
    context: dg.AssetExecutionContext, delta: DeltaTables, feature_store: FeatureStoreResource
) -> dg.MaterializeResult:
    from fs_assets.monitoring.drift import chart_markdown, drift_chart_png, drift_rows, fleet_wide

    days = list(context.partition_keys)
    registry_version = delta.version(REGISTRY_TABLE)
    # Retired units and units in maintenance are not the fleet the model watches: their features
    # would move the statistics without anything having drifted.
    active = delta.read(REGISTRY_TABLE, version=registry_version).where(F.col("status") == "active").select("device_id")
    reports, charts, empty, writes, snapshots = [], {}, [], {}, {}
    # Each model against its promoted reference on the version it is pinned to.
    for version, baselines in _baselines(context, delta, feature_store).items():
        table = feature_store.features_table(version)
        features_version = delta.version(table)
        of_version = []
        for model, _promotion, snapshot in baselines.values():
            snapshots[model.name] = snapshot.version
            windows = (
                _model_windows(delta, table, features_version, model, days, ["device_id", "window_date", *snapshot.features])
                .join(F.broadcast(active), "device_id", "left_semi")
                .drop("device_id")
                .toPandas()
            )
            for day in days:
                of_day = windows[windows["window_date"].astype(str) == day]
                if of_day.empty:
                    empty.append(f"{model.key} {day}")
                    continue
                rows = drift_rows(of_day, snapshot.statistics, snapshot.features)
                rows["fleet_wide_event"] = fleet_wide(rows)
                rows["report_date"] = datetime.fromisoformat(day).date()
                rows = rows.assign(
                    model=model.name,
                    feature_set_version=version,
                    window_minutes=model.window_minutes,
                    snapshot_version=snapshot.version,
                    features_delta_version=features_version,
                    registry_delta_version=registry_version,
                )
                of_version.append(rows)
            latest = [r for r in of_version if r["model"].iat[0] == model.name]
            if latest:
                day = str(latest[-1]["report_date"].iat[0])
                charts[model.name] = chart_markdown(
                    drift_chart_png(latest[-1], f"PSI per feature, {day}, {model.key} against reference v{snapshot.version}"),
                    f"PSI per feature of {model.name} on {day}",
                )
        if not of_version:
            continue
        written = pd.concat(of_version, ignore_index=True)
        written["computed_at"] = datetime.now(UTC)
        writes[version] = delta.replace_partitions(
            spark_rows(delta.session, written, DRIFT_SCHEMA),
            versioned(DRIFT_TABLE, version),
            {"report_date": sorted({d for d in written["report_date"]}), "model": sorted(set(written["model"]))},
            run_id=context.run_id,
            inputs={table: features_version},
            properties={"mergeSchema": "true"},  # a report written before `psi_p_value`
        )
        reports.append(written)
    if empty:
        context.log.warning(f"no active devices' features for {', '.join(empty)}; no drift report for them")
    if not reports:
        raise dg.Failure(
            description=f"no features of active devices for {', '.join(days)}: materialize the feature assets for these days first"
        )
    report = pd.concat(reports, ignore_index=True)

    latest_day = report["report_date"].max()
    latest = report[report["report_date"] == latest_day]
    moved = report[(report["psi_status"] != "ok") | report["null_escalation"]].sort_values("psi", ascending=False)
    moved_rows = [
        {
            "model": r.model,
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
    fleet_days = sorted({f"{m} {d}" for m, d in report.loc[report["fleet_wide_event"], ["model", "report_date"]].itertuples(index=False)})
    if fleet_days:
        context.log.warning(f"fleet-wide drift event on {', '.join(fleet_days)}: 5 or more features at PSI >= 0.1")
    return dg.MaterializeResult(
        metadata=_write_metadata(writes)
        | {f"psi_chart_{name}": dg.MetadataValue.md(chart) for name, chart in charts.items()}
        | {
            "moved_features": table_metadata(
                moved_rows,
                columns=[
                    "model",
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
            "models": dg.MetadataValue.json(snapshots),
            "model_versions": dg.MetadataValue.json(
                {m: v for m, v in report[["model", "feature_set_version"]].drop_duplicates().itertuples(index=False)}
            ),
            "active_devices_only": True,
        }
    )


def _rounded(value) -> float | None:
    return None if value is None or value != value else float(f"{float(value):.4g}")


monitoring_assets = [anomaly_scores, feature_drift_report]
