"""Checks on `anomaly_scores`: how many of a day's scores rest on inputs too sparse, stale or out of
range to trust, and whether a whole site moved away from its normal at once (a site event)."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd
from pyspark.sql import functions as F

from fs_assets.metadata import table_metadata
from fs_assets.partitions import daily_partitions
from fs_checks.results import check_result
from fs_domain.features import FEATURES_BY_NAME
from fs_domain.models import (
    ANOMALY_THRESHOLD,
    MODEL_SPECS,
    REDUCED_CONFIDENCE_MAX_SHARE,
    SITE_EVENT_MAX_AGE_HOURS,
    SITE_EVENT_MAX_WINDOW_MINUTES,
    SITE_EVENT_MIN_DEVICES,
    SITE_EVENT_MIN_SHARE,
)
from fs_domain.tables import ANOMALY_SCORES_TABLE, REGISTRY_TABLE, versioned
from fs_domain.verdicts import Verdict, guide_section
from fs_resources.delta import DeltaTables
from fs_resources.feature_store import FeatureStoreResource

SCORES = dg.AssetKey("anomaly_scores")
CHECK_SCORE_CONFIDENCE = "check_score_confidence"
CHECK_SITE_ANOMALIES = "check_site_anomalies"

WHAT_TO_DO = (
    f"Many scores rest on sparse, stale or out-of-range inputs: read `per_day` for the reason; "
    f"{guide_section('Anomaly scores: reduced confidence')}"
)


def served_scores(delta: DeltaTables, feature_store: FeatureStoreResource, days: list[str]):
    """The days' scores of every model from the table of the version it is pinned to (a version's
    table may still hold scores of a model that has moved since: those are not served)."""
    frames = []
    for version in feature_store.versions():
        models = list(feature_store.models_on(version))
        table = versioned(ANOMALY_SCORES_TABLE, version)
        if models and delta.exists(table):
            frames.append(delta.read(table).where(F.col("window_date").isin(days) & F.col("model").isin(models)))
    if not frames:
        raise dg.Failure(
            description=f"no anomaly scores of any pinned model yet ({feature_store.pins()}): materialize anomaly_scores first"
        )
    scores = frames[0]
    for frame in frames[1:]:
        scores = scores.unionByName(frame, allowMissingColumns=True)
    return scores


@dg.asset_check(
    asset=SCORES,
    name=CHECK_SCORE_CONFIDENCE,
    partitions_def=daily_partitions,
    description=(
        "Per day and model: scores flagged reduced-confidence (sparse, stale or out-of-range inputs), counted by reason; "
        f"warns when more than {REDUCED_CONFIDENCE_MAX_SHARE:.0%} of a model's scores of a day are flagged."
    ),
)
def check_score_confidence(
    context: dg.AssetCheckExecutionContext, delta: DeltaTables, feature_store: FeatureStoreResource
) -> dg.AssetCheckResult:
    days = list(context.partition_keys)
    scores = served_scores(delta, feature_store, days)
    notes = F.coalesce(F.col("confidence_notes"), F.lit(""))
    counts = (
        scores.groupBy("window_date", "model")
        .agg(
            F.count(F.lit(1)).alias("scores"),
            F.sum(F.col("reduced_confidence").cast("int")).alias("reduced_confidence"),
            F.sum(notes.contains("sparse").cast("int")).alias("sparse"),
            F.sum(notes.contains("stale").cast("int")).alias("stale"),
            F.sum(notes.contains("out_of_range").cast("int")).alias("out_of_range"),
        )
        .orderBy("window_date", "model")
        .collect()
    )
    rows = [r.asDict() | {"day": r["window_date"].isoformat(), "share": round(r["reduced_confidence"] / r["scores"], 4)} for r in counts]
    over = [r for r in rows if r["share"] > REDUCED_CONFIDENCE_MAX_SHARE]
    worst = max(rows, key=lambda r: r["share"], default=None)
    return check_result(
        Verdict(
            worst["share"] if worst else 0.0, REDUCED_CONFIDENCE_MAX_SHARE, "<=", "share of a model's scores of a day flagged", WHAT_TO_DO
        ),
        context=context,
        passed=not over,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{len(over)} model-days with more than {REDUCED_CONFIDENCE_MAX_SHARE:.0%} reduced-confidence scores"
            if over
            else "scores rest on inputs as complete, fresh and in range as training"
        ),
        metadata={
            "reduced_confidence": sum(r["reduced_confidence"] for r in rows),
            "scores": sum(r["scores"] for r in rows),
            "per_day": table_metadata(
                rows, columns=["day", "model", "scores", "reduced_confidence", "share", "sparse", "stale", "out_of_range"]
            ),
            "days": ", ".join(days),
        },
    )


SITE_WHAT_TO_DO = (
    "Most of a site's devices left their own normal in the same window: a drifting sensor or gateway calibration "
    "at that site, or a site-wide fault; read `sites` for the feature that moved; "
    f"{guide_section('Anomaly scores: a site event')}"
)
# The models whose windows are short enough to tell a site's drifting sensor from its weather.
SITE_EVENT_MODELS = sorted({m.name for m in MODEL_SPECS if m.window_minutes <= SITE_EVENT_MAX_WINDOW_MINUTES})
SITE_COLUMNS = ["model", "site_id", "window_end", "devices_scored", "beyond_threshold", "share", "top_feature", "sensor", "event"]


def site_events(newest: pd.DataFrame) -> pd.DataFrame:
    """Per model and site, of the model's newest scored window (`newest`: `model`, `site_id`,
    `device_id`, `window_end`, `anomaly_score`, `top_feature`, `confidence_notes`): devices scored
    (sparse inputs left out), how many beyond `ANOMALY_THRESHOLD`, their share, the feature most of
    them name first, and whether that makes a site event."""
    if newest.empty:
        return pd.DataFrame(columns=SITE_COLUMNS)
    notes = newest["confidence_notes"].fillna("")
    scored = newest[newest["anomaly_score"].notna() & ~notes.str.contains("sparse")].copy()
    scored["beyond"] = scored["anomaly_score"] > ANOMALY_THRESHOLD
    rows = []
    for (model, site), group in scored.groupby(["model", "site_id"], sort=True):
        beyond = group[group["beyond"]]
        top = beyond["top_feature"].mode().iat[0] if len(beyond) and beyond["top_feature"].notna().any() else None
        share = len(beyond) / len(group)
        rows.append(
            {
                "model": model,
                "site_id": site,
                "window_end": str(group["window_end"].max()),
                "devices_scored": len(group),
                "beyond_threshold": len(beyond),
                "share": round(share, 4),
                "top_feature": top,
                "sensor": ", ".join(FEATURES_BY_NAME[top].sources) if top in FEATURES_BY_NAME else None,
                "event": len(beyond) >= SITE_EVENT_MIN_DEVICES and share >= SITE_EVENT_MIN_SHARE,
            }
        )
    return pd.DataFrame(rows, columns=SITE_COLUMNS)


@dg.asset_check(
    asset=SCORES,
    name=CHECK_SITE_ANOMALIES,
    partitions_def=daily_partitions,
    description=(
        f"In the newest scored window of each model of windows up to {SITE_EVENT_MAX_WINDOW_MINUTES} minutes "
        f"({', '.join(SITE_EVENT_MODELS)}): the share of each site's active devices beyond the anomaly threshold "
        f"({ANOMALY_THRESHOLD:g}). Fails (a page to the ML route) when at least {SITE_EVENT_MIN_DEVICES} devices and "
        f"{SITE_EVENT_MIN_SHARE:.0%} of a site's are: a sensor drifting across the site, its gateway's calibration, a "
        f"site-wide fault. A window that ended over {SITE_EVENT_MAX_AGE_HOURS} h before it is judged (a backfill) is "
        "reported, not judged."
    ),
)
def check_site_anomalies(
    context: dg.AssetCheckExecutionContext, delta: DeltaTables, feature_store: FeatureStoreResource
) -> dg.AssetCheckResult:
    days = list(context.partition_keys)
    scores = served_scores(delta, feature_store, days)
    scores = scores.where(F.col("model").isin(SITE_EVENT_MODELS))
    newest_end = scores.groupBy("model").agg(F.max("window_end").alias("window_end"))
    active = delta.read(REGISTRY_TABLE).where(F.col("status") == "active").select("device_id", "site_id")
    newest = (
        scores.join(newest_end, ["model", "window_end"], "left_semi")
        .join(active, "device_id")
        .select("model", "site_id", "device_id", "window_end", "anomaly_score", "top_feature", "confidence_notes")
        .toPandas()
    )
    sites = site_events(newest)
    judged_after = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=SITE_EVENT_MAX_AGE_HOURS)
    recent = sites[pd.to_datetime(sites["window_end"]) >= judged_after] if len(sites) else sites
    events = recent[recent["event"]] if len(recent) else recent
    worst = (events if len(events) else recent).sort_values("share", ascending=False).head(1)
    observed = float(worst["share"].iat[0]) if len(worst) else 0.0
    described = "; ".join(
        f"drift at {r.site_id}: {r.top_feature} ({r.sensor}) beyond its normal on {r.beyond_threshold} of "
        f"{r.devices_scored} devices, window to {r.window_end} ({r.model})"
        for r in events.itertuples()
    )
    return check_result(
        Verdict(
            observed,
            SITE_EVENT_MIN_SHARE,
            "<",
            "share of a site's active devices beyond the anomaly threshold",
            SITE_WHAT_TO_DO,
            # It judges the newest windows: a later day's pass on windows it judged clears an earlier day's event.
            judges_newest=bool(len(recent)) or None,
        ),
        context=context,
        passed=events.empty,
        severity=dg.AssetCheckSeverity.ERROR,
        description=described
        or (
            "no site has most of its devices beyond their normal in the newest window"
            if len(recent) or sites.empty
            else f"the newest scored windows ended over {SITE_EVENT_MAX_AGE_HOURS} h ago: reported, not judged"
        ),
        metadata={
            "sites": table_metadata(sites.to_dict("records"), columns=SITE_COLUMNS),
            "anomaly_threshold": ANOMALY_THRESHOLD,
            "min_devices": SITE_EVENT_MIN_DEVICES,
            "days": ", ".join(days),
        },
    )


score_checks = [check_score_confidence, check_site_anomalies]
