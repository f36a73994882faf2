"""The anomaly score: how far a window is from its device's own normal, sensor relations included.

A reference (`ReferenceModel`) is fitted on healthy windows: each feature is centred on its mean
and divided by a robust scale (IQR / 1.349, so one odd window does not widen the yardstick), and
the relations between the standardised features are a covariance shrunk towards the identity
(Oracle Approximating Shrinkage, Chen et al. 2010: a device has tens of healthy windows, too few
for a raw covariance of ten features to be invertible, let alone stable; by measured power it beats
a PCA T²+Q chart and matches Ledoit-Wolf shrinkage, bench/skab_anomaly_auc.py). Its inverse P turns a
window's standardised deviation z into the squared Mahalanobis distance D² = zᵀPz.

Each device has its own reference (`fit_device_references`); a device without one (too new, too
sparse) is scored against the fleet's, and the `reference` column says which was used.

The score is sqrt(D² / k / c), k the number of features scored and c the reference's calibration:
the median squared distance of its own healthy windows, each scored by a reference fitted without
it and its neighbours in time, over the chi-square median for k. Dividing by c makes a healthy window score about 1 whatever
the number of windows a reference was fitted on (a reference fitted on few windows sits closer to
them than to the next healthy one, and would otherwise flag every new window), so one threshold
(`fs_domain.models.ANOMALY_THRESHOLD`) serves every device.

The score explains itself: D² is the sum over features of z_i·(Pz)_i, so `top_features` are the
largest of those terms, and the off-diagonal part of D² is a sum over feature pairs of 2·P_ij·z_i·z_j,
positive when two sensors move against the relation they keep on healthy windows (current up while
pressure falls): `top_pair` names the pair of different sensors with the largest such term.

`score_windows_univariate` is the previous scorer (robust z of each feature alone against a
reference snapshot's statistics), kept as what the benchmarks compare with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fs_domain.features import FEATURES_BY_NAME
from fs_domain.models import MIN_DEVICE_WINDOWS

IQR_TO_SIGMA = 1.349
# A |z| beyond this says "far off" already; capping keeps one broken sensor from drowning the rest.
Z_CAP = 50.0
# A feature NULL in more than this share of a reference's windows is left out of that reference.
MIN_FEATURE_PRESENCE = 0.5
# A feature that never moved on the healthy windows (a duty cycle always 1) still gets a yardstick:
# this share of its level, so a later move off it counts as large but finite.
RELATIVE_SCALE_FLOOR = 0.01
CALIBRATION_FOLDS = 10
# Healthy windows that never moved (every feature on its floor) would give a calibration of 0.
MIN_CALIBRATION = 0.1
TOP_FEATURES = 3
# Rows scored at once: each holds its own reference's precision matrix while it is scored.
CHUNK_ROWS = 50_000
PAIR_SEPARATOR = "×"
DEVICE, FLEET = "device", "fleet"


@dataclass(frozen=True, eq=False)
class ReferenceModel:
    """A fitted reference: where each feature sits on healthy windows, how far it moves, and how
    the features move together."""

    features: tuple[str, ...]
    centre: np.ndarray  # mean of each feature on the healthy windows
    scale: np.ndarray  # robust spread of each feature
    precision: np.ndarray  # inverse of the shrunk covariance of the standardised features
    windows: int  # healthy windows it was fitted on
    # Out-of-sample median D² of its own healthy windows over the chi-square median: 1 for a
    # reference that generalises perfectly, above 1 when few windows make it overconfident.
    calibration: float = 1.0
    shrinkage: float = 0.0  # the weight of the identity in the shrunk covariance

    def to_dict(self) -> dict:
        """JSON-safe: lists of floats, so a promoted reference snapshot can store it."""
        return {
            "features": list(self.features),
            "centre": [float(v) for v in self.centre],
            "scale": [float(v) for v in self.scale],
            "precision": [[float(v) for v in row] for row in self.precision],
            "windows": int(self.windows),
            "calibration": float(self.calibration),
            "shrinkage": float(self.shrinkage),
        }

    @classmethod
    def from_dict(cls, data: dict) -> ReferenceModel:
        return cls(
            features=tuple(data["features"]),
            centre=np.asarray(data["centre"], dtype="float64"),
            scale=np.asarray(data["scale"], dtype="float64"),
            precision=np.asarray(data["precision"], dtype="float64").reshape(len(data["features"]), len(data["features"])),
            windows=int(data["windows"]),
            calibration=float(data.get("calibration", 1.0)),
            shrinkage=float(data.get("shrinkage", 0.0)),
        )


def _robust_scale(values: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """IQR / 1.349 per column of complete rows, the standard deviation where the IQR is zero, and
    never below `RELATIVE_SCALE_FLOOR` of the feature's level."""
    q25, q75 = np.percentile(values, [25, 75], axis=0)
    scale = (q75 - q25) / IQR_TO_SIGMA
    std = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros(values.shape[1])
    scale = np.where(scale > 0, scale, std)
    return np.maximum(scale, RELATIVE_SCALE_FLOOR * np.abs(centre))


def _inverse(matrix: np.ndarray) -> np.ndarray:
    """Inverse of symmetric positive (semi)definite matrices, stacked or not (pseudo-inverse when singular)."""
    try:
        return np.linalg.inv(matrix)
    except np.linalg.LinAlgError:
        return np.linalg.pinv(matrix, hermitian=True)


def _sample_covariance(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The rows of `z` centred, their (biased) covariance, and its mean eigenvalue: what a shrinkage
    towards a scaled identity starts from."""
    centred = z - z.mean(axis=0)
    sample = centred.T @ centred / len(z)
    return centred, sample, float(np.trace(sample) / z.shape[1])


def oas_covariance(z: np.ndarray) -> tuple[np.ndarray, float]:
    """Oracle Approximating Shrinkage of the covariance of the rows of `z` towards a scaled identity:
    (shrunk covariance, weight of the identity)."""
    n, p = z.shape
    _, sample, mu = _sample_covariance(z)
    if p == 1 or mu <= 0:
        return np.eye(p) * max(mu, 1.0), 1.0
    trace_sq = np.sum(sample * sample)
    numerator = (1 - 2 / p) * trace_sq + np.trace(sample) ** 2
    denominator = (n + 1 - 2 / p) * (trace_sq - np.trace(sample) ** 2 / p)
    weight = 1.0 if denominator <= 0 else float(min(1.0, numerator / denominator))
    return (1 - weight) * sample + weight * mu * np.eye(p), weight


def ledoit_wolf_covariance(z: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf shrinkage of the covariance of the rows of `z` towards a scaled identity (2004):
    (shrunk covariance, weight of the identity)."""
    n, p = z.shape
    centred, sample, mu = _sample_covariance(z)
    squared = centred * centred
    beta = (np.sum(squared.T @ squared) / n - np.sum(sample * sample)) / n
    delta = np.sum((sample - mu * np.eye(p)) ** 2)
    weight = 1.0 if delta <= 0 else float(min(1.0, max(beta, 0.0) / delta))
    return (1 - weight) * sample + weight * mu * np.eye(p), weight


def diagonal_covariance(z: np.ndarray) -> tuple[np.ndarray, float]:
    """No relations at all: each standardised feature alone (the univariate score, for comparison)."""
    return np.eye(z.shape[1]), 1.0


SHRINKAGE = {"oas": oas_covariance, "ledoit_wolf": ledoit_wolf_covariance, "diagonal": diagonal_covariance}


def _fit(values: np.ndarray, shrinkage: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(centre, scale, precision, shrinkage weight) of complete rows."""
    centre = values.mean(axis=0)
    scale = _robust_scale(values, centre)
    z = np.clip((values - centre) / scale, -Z_CAP, Z_CAP)
    covariance, weight = SHRINKAGE[shrinkage](z)
    return centre, scale, _inverse(covariance), weight


def _out_of_fold_distances(values: np.ndarray, shrinkage: str) -> np.ndarray:
    """Each row's D² under a reference fitted without its block of consecutive rows (at most
    `CALIBRATION_FOLDS` blocks: leave-one-out for a short reference). Blocks, not every k-th row,
    so a held-out window's neighbours in time are held out with it, as the next windows will be."""
    distances = np.empty(len(values))
    for held in np.array_split(np.arange(len(values)), min(len(values), CALIBRATION_FOLDS)):
        centre, scale, precision, _ = _fit(np.delete(values, held, axis=0), shrinkage)
        z = np.clip((values[held] - centre) / scale, -Z_CAP, Z_CAP)
        distances[held] = np.einsum("ij,jk,ik->i", z, precision, z)
    return distances


def fit_reference(
    windows: pd.DataFrame, features, min_windows: int = MIN_DEVICE_WINDOWS, shrinkage: str = "oas", calibrate: bool = True
) -> ReferenceModel | None:
    """A reference fitted on `windows` (healthy ones) over those of `features` it can use, or None
    when fewer than `min_windows` windows have them.

    A feature NULL in more than `MIN_FEATURE_PRESENCE` of the windows, or that never moves from 0,
    is left out. Windows missing one of the kept features are left out of the fit; if that leaves
    too few, the feature missing most often is dropped instead, until enough complete windows remain.
    """
    names = [f for f in dict.fromkeys(features) if f in windows.columns]
    if len(windows) < min_windows or not names:
        return None
    if "window_start" in windows.columns:
        windows = windows.sort_values("window_start")
    values = windows[names].to_numpy(dtype="float64", na_value=np.nan)
    values[~np.isfinite(values)] = np.nan
    present = np.isfinite(values)
    keep = (present.mean(axis=0) >= MIN_FEATURE_PRESENCE) & (present.sum(axis=0) >= min_windows)
    with np.errstate(invalid="ignore"):
        moving = np.nanmax(np.abs(np.where(present, values, 0.0)), axis=0) > 0
    keep &= moving
    while keep.any():
        complete = present[:, keep].all(axis=1)
        if complete.sum() >= min_windows:
            break
        missing = np.where(keep, (~present).sum(axis=0), -1)
        keep[int(missing.argmax())] = False
    if not keep.any():
        return None
    rows = values[complete][:, keep]
    kept = [n for n, k in zip(names, keep) if k]
    centre, scale, precision, weight = _fit(rows, shrinkage)
    if calibrate:
        # Imported here: scipy.stats costs every process that loads the code location most of a second.
        from scipy.stats import chi2

        calibration = float(np.median(_out_of_fold_distances(rows, shrinkage))) / chi2.median(len(kept))
    else:
        calibration = 1.0
    return ReferenceModel(
        features=tuple(kept),
        centre=centre,
        scale=scale,
        precision=precision,
        windows=len(rows),
        calibration=max(calibration, MIN_CALIBRATION),
        shrinkage=weight,
    )


def fit_device_references(
    windows: pd.DataFrame,
    features,
    device_column: str = "device_id",
    min_windows: int = MIN_DEVICE_WINDOWS,
    shrinkage: str = "oas",
    calibrate: bool = True,
) -> dict[str, ReferenceModel]:
    """Each device's reference fitted on its own `windows`; devices with too few usable windows are left out."""
    models = {}
    for device, frame in windows.groupby(device_column, sort=False):
        model = fit_reference(frame, features, min_windows=min_windows, shrinkage=shrinkage, calibrate=calibrate)
        if model is not None:
            models[str(device)] = model
    return models


def _sensors(name: str) -> frozenset[str]:
    feature = FEATURES_BY_NAME.get(name)
    return frozenset(feature.sources) if feature is not None and feature.sources else frozenset([name])


def _unscored(n: int) -> dict[str, np.ndarray]:
    """The score columns of `n` rows before any is scored."""
    return {
        "anomaly_score": np.full(n, np.nan),
        "top_feature": np.full(n, None, dtype=object),
        "top_z": np.full(n, np.nan),
        "top_features": np.empty(n, dtype=object),
        "top_pair": np.full(n, None, dtype=object),
    }


def _explain(z: np.ndarray, precision: np.ndarray, names: list[str], calibration: np.ndarray) -> dict[str, np.ndarray]:
    """Scores and their explanation for rows of standardised deviations `z` (n × k) with each row's
    own precision (n × k × k) and calibration (n)."""
    n, k = z.shape
    label = np.array(names, dtype=object)
    out = _unscored(n)
    if k == 0:
        for r in range(n):
            out["top_features"][r] = []
        return out
    terms = z * np.einsum("nij,nj->ni", precision, z)
    out["anomaly_score"] = np.sqrt(np.maximum(terms.sum(axis=1), 0.0) / k / calibration)
    top = min(TOP_FEATURES, k)
    # The largest few only: partitioned, then those few sorted (largest first, ties by feature order).
    head = np.argpartition(-terms, top - 1, axis=1)[:, :top] if top < k else np.tile(np.arange(k), (n, 1))
    head.sort(axis=1)
    order = np.take_along_axis(head, np.argsort(-np.take_along_axis(terms, head, axis=1), axis=1, kind="stable"), axis=1)
    out["top_feature"] = label[order[:, 0]]
    out["top_z"] = z[np.arange(n), order[:, 0]]
    # One list per distinct ranking (a few hundred at most), shared by the rows that have it: building
    # a list per row cost a fifth of the scoring. The lists are read, never changed.
    ranking, first, shared = np.unique(order @ (k ** np.arange(top - 1, -1, -1)), return_index=True, return_inverse=True)
    lists = np.empty(len(ranking), dtype=object)
    for u, r in enumerate(first):
        lists[u] = label[order[r]].tolist()
    out["top_features"] = lists[shared.reshape(-1)]
    i, j = np.nonzero(np.triu([[not (_sensors(a) & _sensors(b)) for b in names] for a in names], k=1))
    if len(i):
        pair_terms = 2 * precision[:, i, j] * z[:, i] * z[:, j]
        best = pair_terms.argmax(axis=1)
        pairs = np.array([f"{names[a]}{PAIR_SEPARATOR}{names[b]}" for a, b in zip(i, j)], dtype=object)
        out["top_pair"] = np.where(pair_terms[np.arange(n), best] > 0, pairs[best], None)
    return out


def _score_group(values: np.ndarray, models: list[ReferenceModel], which: np.ndarray) -> dict[str, np.ndarray]:
    """Scores of rows `values` (columns in the models' common feature order, NaN where missing or not
    asked for), row r against `models[which[r]]`, batched by which features a row has."""
    n, k = values.shape
    centre = np.stack([m.centre for m in models])
    scale = np.stack([m.scale for m in models])
    precision = np.stack([m.precision for m in models])
    calibration = np.array([m.calibration for m in models])
    names = list(models[0].features)
    present = np.isfinite(values)
    out = _unscored(n) | {"features_scored": present.sum(axis=1).astype("int64")}
    covariance = None
    # Rows grouped by which features they have: each pattern as one integer (a bit a feature), as a
    # unique over the rows of a boolean matrix sorts them lexicographically, half the scoring's time.
    codes = present.astype(np.int64) @ (np.int64(1) << np.arange(k, dtype=np.int64)) if k < 63 else None
    patterns, inverse = np.unique(codes, return_inverse=True) if codes is not None else np.unique(present, axis=0, return_inverse=True)
    for p, pattern in enumerate(patterns):
        keep = np.flatnonzero((pattern >> np.arange(k)) & 1) if codes is not None else np.flatnonzero(pattern)
        of_pattern = np.flatnonzero(inverse.reshape(-1) == p)
        # Each row takes its own k × k precision: rows go in chunks so memory stays bounded at any fleet size.
        for start in range(0, len(of_pattern), CHUNK_ROWS):
            rows = of_pattern[start : start + CHUNK_ROWS]
            models_of = which[rows]
            if len(keep) == k:
                block = precision[models_of]
            else:
                # The reference restricted to the features the row has: the inverse of its covariance's sub-block.
                covariance = _inverse(precision) if covariance is None else covariance
                used = np.unique(models_of)
                marginal = _inverse(covariance[np.ix_(used, keep, keep)]) if len(keep) else np.zeros((len(used), 0, 0))
                block = marginal[np.searchsorted(used, models_of)]
            z = np.clip((values[np.ix_(rows, keep)] - centre[models_of][:, keep]) / scale[models_of][:, keep], -Z_CAP, Z_CAP)
            for key, column in _explain(z, block, [names[i] for i in keep], calibration[models_of]).items():
                out[key][rows] = column
    return out


def score_windows(
    windows: pd.DataFrame,
    features,
    fleet: ReferenceModel | None = None,
    devices: dict[str, ReferenceModel] | None = None,
    device_column: str = "device_id",
) -> pd.DataFrame:
    """Per row of `windows`: `anomaly_score`, `reference` ("device" when the row's device has its
    own reference in `devices`, else "fleet"), `top_feature` and its standardised deviation
    `top_z`, `top_features` (the largest contributions to the score, largest first), `top_pair`
    (the two sensors whose joint move against their healthy relation added most, or None) and
    `features_scored`, over those of `features` (a model's `scored_features`) the reference has.
    """
    if fleet is None:
        raise ValueError("score_windows needs a fleet reference to fall back on")
    devices = devices or {}
    n = len(windows)
    ids = windows[device_column].astype(str).to_numpy() if device_column in windows.columns else np.full(n, "", dtype=object)
    own = (
        pd.Series(ids).map({d: i + 1 for i, d in enumerate(devices)}).fillna(0).to_numpy(dtype="int64") if devices else np.zeros(n, "int64")
    )
    models = [fleet, *devices.values()]
    asked = [f for f in dict.fromkeys(features) if f in windows.columns]
    out = {
        "reference": np.where(own > 0, DEVICE, FLEET).astype(object),
        "anomaly_score": np.full(n, np.nan),
        "top_feature": np.full(n, None, dtype=object),
        "top_z": np.full(n, np.nan),
        "top_features": np.empty(n, dtype=object),
        "top_pair": np.full(n, None, dtype=object),
        "features_scored": np.zeros(n, dtype="int64"),
    }
    # Models that share a feature list are scored together, as stacked arrays.
    by_features: dict[tuple[str, ...], list[int]] = {}
    for index in np.unique(own):
        by_features.setdefault(models[index].features, []).append(int(index))
    for names, indices in by_features.items():
        rows = np.flatnonzero(np.isin(own, indices))
        values = np.full((len(rows), len(names)), np.nan)
        for c, name in enumerate(names):
            if name in asked:
                values[:, c] = windows[name].iloc[rows].to_numpy(dtype="float64", na_value=np.nan)
        values[~np.isfinite(values)] = np.nan
        position = np.searchsorted(indices, own[rows])
        for key, column in _score_group(values, [models[i] for i in indices], position).items():
            out[key][rows] = column
    return pd.DataFrame(out, index=windows.index)


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


def score_windows_univariate(windows: pd.DataFrame, statistics: dict[str, dict], features: tuple[str, ...]) -> pd.DataFrame:
    """`anomaly_score`, `top_feature`, `top_z` and `features_scored` for each row of `windows`, from
    `features` (a model's `scored_features`) each alone: the root mean square of their robust z
    against a reference snapshot's statistics (features that are NULL are left out)."""
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
