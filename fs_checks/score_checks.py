"""Checks on `anomaly_scores`: how many of a day's scores rest on inputs too sparse, stale or out of range to trust."""

import dagster as dg
from pyspark.sql import functions as F

from fs_assets.metadata import table_metadata
from fs_assets.partitions import daily_partitions
from fs_checks.results import check_result
from fs_domain.models import REDUCED_CONFIDENCE_MAX_SHARE
from fs_domain.tables import ANOMALY_SCORES_TABLE, versioned
from fs_domain.verdicts import Verdict, guide_section
from fs_resources.delta import DeltaTables
from fs_resources.feature_store import FeatureStoreResource

SCORES = dg.AssetKey("anomaly_scores")
CHECK_SCORE_CONFIDENCE = "check_score_confidence"

WHAT_TO_DO = (
    f"Many scores rest on sparse, stale or out-of-range inputs: read `per_day` for the reason; "
    f"{guide_section('Anomaly scores: reduced confidence')}"
)


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
    scores = delta.read(versioned(ANOMALY_SCORES_TABLE, feature_store.version())).where(F.col("window_date").isin(days))
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


score_checks = [check_score_confidence]
