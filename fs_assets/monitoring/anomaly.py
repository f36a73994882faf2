"""The baseline anomaly scorer: robust z-scores of a model's scored features against its reference.

For each scored feature, z = (value - reference median) / (reference IQR / 1.349), the IQR scaled
to a standard deviation for normal data, so one outlier in training does not widen the yardstick.
A window's score is the root mean square of its features' z (features that are NULL are left
out), and `top_feature` names the one that moved most: an operator sees why, not just how much.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

IQR_TO_SIGMA = 1.349
# A |z| beyond this says "far off" already; capping keeps one broken sensor from drowning the rest.
Z_CAP = 50.0


def robust_scales(statistics: dict[str, dict], features: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """(centre, scale) per feature the reference can score: median and IQR/1.349 (std when the
    IQR is zero, e.g. a duty cycle that was always 1)."""
    scales = {}
    for name in features:
        s = statistics.get(name)
        if not s or s.get("p50") is None:
            continue
        scale = (s["p75"] - s["p25"]) / IQR_TO_SIGMA
        if not scale > 0:
            scale = s.get("std") or 0.0
        if scale > 0:
            scales[name] = (s["p50"], scale)
    return scales


def score_windows(windows: pd.DataFrame, statistics: dict[str, dict], features: tuple[str, ...]) -> pd.DataFrame:
    """`anomaly_score`, `top_feature`, `top_z` and `features_scored` for each row of `windows`, from
    `features` (a model's `scored_features`)."""
    scales = robust_scales(statistics, features)
    if not scales:
        raise ValueError("the reference snapshot has no usable statistics for any scored feature")
    names = list(scales)
    values = windows[names].to_numpy(dtype="float64", na_value=np.nan)
    centre = np.array([scales[n][0] for n in names])
    scale = np.array([scales[n][1] for n in names])
    z = np.clip((values - centre) / scale, -Z_CAP, Z_CAP)
    present = np.isfinite(z)
    count = present.sum(axis=1)
    squares = np.where(present, z * z, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(count > 0, np.sqrt(squares / np.maximum(count, 1)), np.nan)
    magnitude = np.where(present, np.abs(z), -1.0)
    top = magnitude.argmax(axis=1)
    return pd.DataFrame(
        {
            "anomaly_score": score,
            "top_feature": np.where(count > 0, np.array(names, dtype=object)[top], None),
            "top_z": np.where(count > 0, z[np.arange(len(z)), top], np.nan),
            "features_scored": count.astype("int64"),
        },
        index=windows.index,
    )


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (the probability that an anomalous window outscores a normal one; ties count half)."""
    from scipy.stats import rankdata

    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))
