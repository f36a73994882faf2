"""Feature drift against a model's reference snapshot: summary statistics, PSI, status, a chart.

PSI = sum over bins of (p - q) * ln(p / q), p the day's share of values in a bin and q the
training share, over the reference's bins (its inner deciles, -inf and +inf at the ends). Shares
are floored at 1e-4 so an empty bin costs a bounded amount instead of infinity.

A PSI is a drift only when chance cannot explain it: with few windows on either side (a small
fleet, a reference fitted on one day), bins fill unevenly by luck alone, one empty bin costs about
0.7, and a healthy day of 50 devices scored 1.1 against a reference of 50 windows (measured in the
paging drill). So each PSI comes with the p-value of a chi-square test of homogeneity between the
reference's bin counts and the day's; a feature is `investigate` or `significant` only when that
p-value is below `DRIFT_P_VALUE` as well. On the design fleet (100,000 devices) any PSI above 0.1 has
a p-value far below it, so the thresholds act as before.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd

# DESIGN.md, monitoring thresholds.
PSI_WARN = 0.1
PSI_ERROR = 0.25
NULL_ESCALATION = 0.05  # +5 percentage points over the reference's null fraction
FLEET_WIDE_FEATURES = 5  # this many features at PSI >= 0.1 at once is a fleet-wide event
SHARE_FLOOR = 1e-4
DRIFT_P_VALUE = 0.001  # how unlikely by chance a PSI must be to count as drift

STATUS_OK, STATUS_WARN, STATUS_ERROR = "ok", "investigate", "significant"


def psi(values: pd.Series, bin_edges: list[float], reference_shares: list[float]) -> float | None:
    numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64")
    present = numeric[np.isfinite(numeric)]
    if len(present) == 0 or not reference_shares:
        return None
    counts = _counts(values, bin_edges)
    p = np.maximum(counts / len(present), SHARE_FLOOR)
    q = np.maximum(np.asarray(reference_shares, dtype="float64"), SHARE_FLOOR)
    return float(np.sum((p - q) * np.log(p / q)))


def _counts(values: pd.Series, bin_edges: list[float]) -> np.ndarray:
    numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64")
    present = numeric[np.isfinite(numeric)]
    return np.bincount(np.searchsorted(np.asarray(bin_edges), present, side="right"), minlength=len(bin_edges) + 1)


def psi_p_value(values: pd.Series, bin_edges: list[float], reference_shares: list[float], reference_count: float) -> float | None:
    """The chance of bin counts at least this far from the reference's if both came from one
    distribution (chi-square test of homogeneity over the bins either side fills); None when a side
    has no values."""
    from scipy.stats import chi2_contingency

    counts = _counts(values, bin_edges)
    reference = np.asarray(reference_shares, dtype="float64") * reference_count
    if not reference_shares or counts.sum() == 0 or reference.sum() <= 0:
        return None
    used = (counts + reference) > 0
    if used.sum() < 2:
        return 1.0
    return float(chi2_contingency(np.vstack([reference[used], counts[used]]), correction=False).pvalue)


def psi_status(value: float | None, p_value: float | None = 0.0) -> str:
    if value is None or p_value is None or p_value >= DRIFT_P_VALUE:
        return STATUS_OK
    if value > PSI_ERROR:
        return STATUS_ERROR
    if value >= PSI_WARN:
        return STATUS_WARN
    return STATUS_OK


def drift_rows(windows: pd.DataFrame, statistics: dict[str, dict], features: list[str]) -> pd.DataFrame:
    """One row per feature: the day's mean, std, p5/p50/p95, null fraction, PSI and statuses."""
    rows = []
    for name in features:
        ref = statistics[name]
        numeric = pd.to_numeric(windows[name], errors="coerce").astype("float64")
        present = numeric[np.isfinite(numeric)]
        null_fraction = float(1 - len(present) / len(numeric)) if len(numeric) else 1.0
        value = psi(numeric, ref["bin_edges"], ref["bin_shares"])
        reference_count = (ref.get("count") or 0) * (1 - (ref.get("null_fraction") or 0.0))
        p_value = psi_p_value(numeric, ref["bin_edges"], ref["bin_shares"], reference_count) if value is not None else None
        rows.append(
            {
                "feature": name,
                "devices": int(len(numeric)),
                "mean": float(present.mean()) if len(present) else None,
                "std": float(present.std(ddof=1)) if len(present) > 1 else None,
                "p5": float(np.quantile(present, 0.05)) if len(present) else None,
                "p50": float(np.quantile(present, 0.5)) if len(present) else None,
                "p95": float(np.quantile(present, 0.95)) if len(present) else None,
                "null_fraction": null_fraction,
                "reference_mean": ref.get("mean"),
                "reference_null_fraction": ref["null_fraction"],
                "psi": value,
                "psi_p_value": p_value,
                "psi_status": psi_status(value, p_value),
                "null_escalation": bool(null_fraction > ref["null_fraction"] + NULL_ESCALATION),
            }
        )
    return pd.DataFrame(rows)


def fleet_wide(rows: pd.DataFrame) -> bool:
    return int((rows["psi_status"] != STATUS_OK).sum()) >= FLEET_WIDE_FEATURES


def drift_chart_png(rows: pd.DataFrame, title: str) -> bytes:
    """Horizontal bars of PSI per feature, coloured by status, with the 0.1 and 0.25 thresholds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = rows.assign(psi=rows["psi"].fillna(0.0)).sort_values("psi")
    colours = {STATUS_OK: "#4c9a2a", STATUS_WARN: "#e0a800", STATUS_ERROR: "#c0392b"}
    height = max(3.0, 0.22 * len(ordered) + 1.2)
    figure, axis = plt.subplots(figsize=(8, height), dpi=100)
    axis.barh(ordered["feature"], ordered["psi"], color=[colours[s] for s in ordered["psi_status"]])
    for threshold, label in ((PSI_WARN, "0.1 investigate"), (PSI_ERROR, "0.25 significant")):
        axis.axvline(threshold, color="#555555", linestyle="--", linewidth=1)
        axis.text(threshold, len(ordered) - 0.5, f" {label}", fontsize=8, va="top")
    axis.set_xlabel("PSI against the reference snapshot")
    axis.set_title(title, fontsize=10)
    axis.tick_params(axis="y", labelsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def chart_markdown(png: bytes, alt: str) -> str:
    """The chart inline in asset metadata (the Dagster UI renders markdown images from data URIs)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
