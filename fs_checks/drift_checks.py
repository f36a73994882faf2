"""Checks on `feature_drift_report`: PSI per feature (to the ML channel) and null-fraction
escalation (a data-quality problem, to data engineering)."""

from dataclasses import replace
from datetime import UTC, date, datetime

import dagster as dg
import pandas as pd
from pyspark.sql import functions as F

from fs_assets.monitoring.drift import DRIFT_P_VALUE, FLEET_WIDE_FEATURES, NULL_ESCALATION, PSI_ERROR, PSI_WARN, STATUS_ERROR, STATUS_OK
from fs_assets.partitions import daily_partitions
from fs_checks.results import check_result
from fs_domain.tables import DRIFT_TABLE, versioned
from fs_domain.verdicts import Verdict, guide_section
from fs_resources.delta import DeltaTables
from fs_resources.feature_store import FeatureStoreResource

DRIFT_REPORT = dg.AssetKey("feature_drift_report")
CHECK_FEATURE_DRIFT = "check_feature_drift"
CHECK_NULL_FRACTION_DRIFT = "check_null_fraction_drift"

GUIDE = guide_section("Drift: PSI and null fractions")
WHAT_TO_DO_PSI = f"Features moved from the model's reference: read `worst_feature` and the report's charts, ask the ML owners; {GUIDE}"
WHAT_TO_DO_NULLS = f"A feature is NULL more often than in training: a sensor or transport problem for data engineering; {GUIDE}"


def _report(context, delta: DeltaTables, feature_store: FeatureStoreResource):
    """The days' drift rows of every model on the version it is pinned to."""
    days = list(context.partition_keys)
    frames = []
    for version in feature_store.versions():
        models = list(feature_store.models_on(version))
        table = versioned(DRIFT_TABLE, version)
        if models and delta.exists(table):
            frames.append(delta.read(table).where(F.col("report_date").isin(days) & F.col("model").isin(models)).toPandas())
    if not frames:
        raise dg.Failure(
            description=f"no drift report of any pinned model yet ({feature_store.pins()}): materialize feature_drift_report first"
        )
    return pd.concat(frames, ignore_index=True), days


@dg.asset_check(
    asset=DRIFT_REPORT,
    name=CHECK_FEATURE_DRIFT,
    partitions_def=daily_partitions,
    description=f"No feature at PSI >= {PSI_WARN} against the reference: warns from {PSI_WARN} (investigate), errors above {PSI_ERROR} (significant) or on a fleet-wide event ({FLEET_WIDE_FEATURES}+ features at once); a PSI counts only when chance could not give it (chi-square p < {DRIFT_P_VALUE}).",
)
def check_feature_drift(
    context: dg.AssetCheckExecutionContext, delta: DeltaTables, feature_store: FeatureStoreResource
) -> dg.AssetCheckResult:
    report, days = _report(context, delta, feature_store)
    report, moved, significant, fleet_wide, in_progress = judge_drift(report, datetime.now(UTC).date())
    worst = moved.iloc[0] if len(moved) else None
    return check_result(
        drift_verdict(report, moved, significant, fleet_wide),
        context=context,
        passed=moved.empty,
        severity=dg.AssetCheckSeverity.ERROR if len(significant) or fleet_wide else dg.AssetCheckSeverity.WARN,
        description=(
            f"{len(moved)} model feature-days at PSI >= {PSI_WARN} ({len(significant)} above {PSI_ERROR})"
            + ("; fleet-wide event" if fleet_wide else "")
            if len(moved)
            else "no feature drifted"
        )
        + (f"; {', '.join(in_progress)} in progress, judged once complete" if in_progress else ""),
        metadata={
            "worst_feature": f"{worst['model']}: {worst['feature']}" if worst is not None else "",
            "features_investigate": dg.MetadataValue.json(_named(moved[moved["psi_status"] != STATUS_ERROR])),
            "features_significant": dg.MetadataValue.json(_named(significant)),
            "fleet_wide_event": fleet_wide,
            "days": ", ".join(days),
            "days_in_progress_not_judged": ", ".join(in_progress),
        },
    )


def judge_drift(report: pd.DataFrame, today: date) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, bool, list[str]]:
    """The days' drift rows judged: (the rows of complete days, the features moved, those significant,
    whether a fleet-wide event happened, the days in progress left unjudged).

    A day in progress holds only its first hours: against a reference of whole days its hours' mix
    differs (the condenser follows the day's temperature), so it is judged once complete, when the
    day's last features re-run the report. A feature moves by the report's status: a PSI past a
    threshold that chance alone could give (few windows) is not drift."""
    if not len(report):
        return report, report, report, False, []
    in_progress = sorted({str(d) for d in report["report_date"] if d >= today})
    report = report[report["report_date"] < today]
    moved = report[report["psi_status"] != STATUS_OK].sort_values("psi", ascending=False)
    significant = moved[moved["psi_status"] == STATUS_ERROR]
    fleet_wide = bool(report["fleet_wide_event"].any()) if len(report) else False
    return report, moved, significant, fleet_wide, in_progress


def drift_verdict(report, moved, significant, fleet_wide: bool) -> Verdict:
    """The largest PSI against the bound the reported severity breaks; for a fleet-wide event, the most
    features of one model moved on one day against how many make one. `report` holds the complete
    days judged (`judge_drift`): when it has any, the verdict judges the newest state, since a drifted
    day stays drifted and the drift itself is over once a later complete day passes."""
    return replace(_largest_move(report, moved, significant, fleet_wide), judges_newest=bool(len(report)) or None)


def _largest_move(report, moved, significant, fleet_wide: bool) -> Verdict:
    # The largest PSI that counts: of the features moved, else of those chance could not explain at
    # any PSI (a larger one chance could give is no drift, and reporting it would read as one).
    counted = moved if len(moved) else report[report["psi_p_value"].fillna(1.0) < DRIFT_P_VALUE] if "psi_p_value" in report else report
    largest = counted["psi"].max() if len(counted) else 0.0
    largest = 0.0 if pd.isna(largest) else float(largest)
    if len(significant):
        return Verdict(largest, PSI_ERROR, "<=", "PSI of a model's feature", WHAT_TO_DO_PSI)
    if fleet_wide:
        at_once = int(moved.groupby(["model", "report_date"]).size().max())
        return Verdict(at_once, FLEET_WIDE_FEATURES, "<", f"features of one model-day at PSI >= {PSI_WARN}", WHAT_TO_DO_PSI)
    return Verdict(largest, PSI_WARN, "<", "PSI of a model's feature", WHAT_TO_DO_PSI)


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
    rise = (report["null_fraction"] - report["reference_null_fraction"]).max() if len(report) else 0.0
    return check_result(
        Verdict(
            0.0 if pd.isna(rise) else float(rise), NULL_ESCALATION, "<=", "share points of NULLs above the reference", WHAT_TO_DO_NULLS
        ),
        context=context,
        passed=escalated.empty,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{len(escalated)} feature-days with null fraction up more than {NULL_ESCALATION:.0%} points"
        if len(escalated)
        else "null fractions as in training",
        metadata={
            "features": dg.MetadataValue.json(_named(escalated) if len(escalated) else []),
            "days": ", ".join(days),
        },
    )


def _named(rows) -> list[str]:
    return sorted({f"{m}: {f}" for m, f in zip(rows["model"], rows["feature"])})


drift_checks = [check_feature_drift, check_null_fraction_drift]
