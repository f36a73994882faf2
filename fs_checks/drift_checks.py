"""Checks on `feature_drift_report`: PSI per feature (to the ML channel) and null-fraction
escalation (a data-quality problem, to data engineering)."""

import dagster as dg
from pyspark.sql import functions as F

from fs_assets.monitoring.drift import FLEET_WIDE_FEATURES, NULL_ESCALATION, PSI_ERROR, PSI_WARN
from fs_assets.partitions import daily_partitions
from fs_domain.tables import DRIFT_TABLE, versioned
from fs_resources.delta import DeltaTables
from fs_resources.feature_store import FeatureStoreResource

DRIFT_REPORT = dg.AssetKey("feature_drift_report")
CHECK_FEATURE_DRIFT = "check_feature_drift"
CHECK_NULL_FRACTION_DRIFT = "check_null_fraction_drift"


def _report(context, delta: DeltaTables, feature_store: FeatureStoreResource):
    """The days' drift rows of every model on the run's feature set version."""
    days = list(context.partition_keys)
    report = delta.read(versioned(DRIFT_TABLE, feature_store.version())).where(F.col("report_date").isin(days)).toPandas()
    return report, days


@dg.asset_check(
    asset=DRIFT_REPORT,
    name=CHECK_FEATURE_DRIFT,
    partitions_def=daily_partitions,
    description=f"No feature at PSI >= {PSI_WARN} against the reference: warns from {PSI_WARN} (investigate), errors above {PSI_ERROR} (significant) or on a fleet-wide event ({FLEET_WIDE_FEATURES}+ features at once).",
)
def check_feature_drift(
    context: dg.AssetCheckExecutionContext, delta: DeltaTables, feature_store: FeatureStoreResource
) -> dg.AssetCheckResult:
    report, days = _report(context, delta, feature_store)
    moved = report[report["psi"].fillna(0) >= PSI_WARN].sort_values("psi", ascending=False)
    significant = moved[moved["psi"] > PSI_ERROR]
    fleet_wide = bool(report["fleet_wide_event"].any()) if len(report) else False
    worst = moved.iloc[0] if len(moved) else None
    return dg.AssetCheckResult(
        passed=moved.empty,
        severity=dg.AssetCheckSeverity.ERROR if len(significant) or fleet_wide else dg.AssetCheckSeverity.WARN,
        description=(
            f"{len(moved)} model feature-days at PSI >= {PSI_WARN} ({len(significant)} above {PSI_ERROR})"
            + ("; fleet-wide event" if fleet_wide else "")
            if len(moved)
            else "no feature drifted"
        ),
        metadata={
            "observed": float(worst["psi"]) if worst is not None else float(report["psi"].max() if len(report) else 0.0),
            "threshold": PSI_ERROR if len(significant) else PSI_WARN,
            "worst_feature": f"{worst['model']}: {worst['feature']}" if worst is not None else "",
            "features_investigate": dg.MetadataValue.json(_named(moved[moved["psi"] <= PSI_ERROR])),
            "features_significant": dg.MetadataValue.json(_named(significant)),
            "fleet_wide_event": fleet_wide,
            "days": ", ".join(days),
        },
    )


@dg.asset_check(
    asset=DRIFT_REPORT,
    name=CHECK_NULL_FRACTION_DRIFT,
    partitions_def=daily_partitions,
    description=f"No feature's null fraction more than {NULL_ESCALATION:.0%} points above the reference's (a sensor or transport problem).",
)
def check_null_fraction_drift(
    context: dg.AssetCheckExecutionContext, delta: DeltaTables, feature_store: FeatureStoreResource
) -> dg.AssetCheckResult:
    report, days = _report(context, delta, feature_store)
    escalated = report[report["null_escalation"].astype(bool)] if len(report) else report
    rise = (report["null_fraction"] - report["reference_null_fraction"]) if len(report) else None
    return dg.AssetCheckResult(
        passed=escalated.empty,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{len(escalated)} feature-days with null fraction up more than {NULL_ESCALATION:.0%} points"
        if len(escalated)
        else "null fractions as in training",
        metadata={
            "observed": float(rise.max()) if rise is not None and len(rise) else 0.0,
            "threshold": NULL_ESCALATION,
            "features": dg.MetadataValue.json(_named(escalated) if len(escalated) else []),
            "days": ", ".join(days),
        },
    )


def _named(rows) -> list[str]:
    return sorted({f"{m}: {f}" for m, f in zip(rows["model"], rows["feature"])})


drift_checks = [check_feature_drift, check_null_fraction_drift]
