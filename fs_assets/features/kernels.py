"""Vectorised feature kernels: every feature of every window of many devices in one numpy pass.

Readings are grouped into windows, and each window's values are laid out as one row of a padded
2-D array (NaN-padded, windows of similar size batched together so padding never more than
doubles memory). Every statistic is then a whole-array numpy operation. This module is the one
definition of the window features' math: Spark runs it per device-sorted partition
(`compute.window_features`), and `window_features_frame` gives the same result on a pandas frame.
Every feature is NULL (NaN here) below its registry threshold for the window size
(`Feature.threshold(minutes)`), applied in one place, `_guarded`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fs_domain.contract import SENSOR_NAMES
from fs_domain.features import COMPRESSOR_ON_AMPS, FEATURES, FEATURES_BY_NAME

MICROS_PER_MINUTE = 60_000_000
P95 = 0.95
SPECTRAL = "spectral_entropy_vibration"


def _guarded(out: dict[str, np.ndarray], valid_counts: dict[str, np.ndarray], counts: np.ndarray, minutes: int) -> dict[str, np.ndarray]:
    """Every feature NaN where its window holds fewer non-NULL values of any of its sources (or
    fewer readings, for a feature without sources) than the registry's threshold for the window
    size, or where the feature has no window of this size."""
    for feature in FEATURES:
        if feature.name not in out:
            continue
        if minutes not in feature.windows:
            out[feature.name] = np.full(len(counts), np.nan)
            continue
        least = feature.threshold(minutes)
        if least <= 0 or feature.dtype != "double":
            continue
        present = counts if not feature.sources else np.minimum.reduce([valid_counts[s] for s in feature.sources])
        out[feature.name] = np.where(present >= least, out[feature.name], np.nan)
    return out


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    # numpy's own interpolation for percentiles (method="linear"), for bit-for-bit agreement.
    diff = b - a
    out = a + diff * t
    return np.where(t >= 0.5, b - diff * (1 - t), out)


def _percentile(values: np.ndarray, n: np.ndarray, q: float) -> np.ndarray:
    """Row-wise percentile of NaN-padded rows holding n[i] valid values (numpy's linear method)."""
    ordered = np.sort(values, axis=1)  # NaN sorts last
    h = (np.maximum(n, 1) - 1) * q
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    rows = np.arange(len(values))
    result = _lerp(ordered[rows, lo], ordered[rows, hi], h - lo)
    return np.where(n >= 1, result, np.nan)


def spectral_entropy_rows(values: np.ndarray, n: np.ndarray, least: int) -> np.ndarray:
    """Row-wise normalised spectral entropy; NaN below `least` values or for a constant signal."""
    out = np.full(len(values), np.nan)
    # Move each row's valid values to the front, in time order, then batch rows of equal length.
    compact = np.take_along_axis(values, np.argsort(np.isnan(values), axis=1, kind="stable"), axis=1)
    for length in np.unique(n[n >= max(least, 2)]):
        rows = np.flatnonzero(n == length)
        x = compact[rows, :length]
        x = x - x.mean(axis=1, keepdims=True)
        power = np.abs(np.fft.rfft(x, axis=1))[:, 1:] ** 2
        total = power.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = power / total
            terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
            entropy = -terms.sum(axis=1) / np.log(power.shape[1]) if power.shape[1] > 1 else np.full(len(rows), np.nan)
        out[rows] = np.where((total[:, 0] > 0) & np.isfinite(total[:, 0]), entropy, np.nan)
    return out


def _batch_features(columns: dict[str, np.ndarray], x: np.ndarray, counts: np.ndarray, minutes: int) -> dict[str, np.ndarray]:
    """Features for a batch of windows given as NaN-padded rows (one row per window)."""
    out: dict[str, np.ndarray] = {"reading_count": counts.astype(np.int64)}
    valid_counts: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for sensor in SENSOR_NAMES:
            v = columns[sensor]
            valid = ~np.isnan(v)
            n = valid.sum(axis=1)
            valid_counts[sensor] = n
            mean = np.where(valid, v, 0.0).sum(axis=1) / np.maximum(n, 1)
            dev = np.where(valid, v - mean[:, None], 0.0)
            out[f"{sensor}_mean"] = mean
            out[f"{sensor}_std"] = np.sqrt((dev * dev).sum(axis=1) / np.maximum(n - 1, 1))
            out[f"{sensor}_min"] = np.where(valid, v, np.inf).min(axis=1)
            out[f"{sensor}_max"] = np.where(valid, v, -np.inf).max(axis=1)
            out[f"{sensor}_p95"] = _percentile(v, n, P95)
            # Least squares against minutes since window_start, on the pairs where the sensor is present.
            x_mean = np.where(valid, x, 0.0).sum(axis=1) / np.maximum(n, 1)
            x_dev = np.where(valid, x - x_mean[:, None], 0.0)
            sxx = (x_dev * x_dev).sum(axis=1)
            out[f"{sensor}_slope"] = np.where(sxx > 0, (x_dev * dev).sum(axis=1) / sxx, np.nan)
        out["sensor_completeness"] = sum(valid_counts.values()) / (len(SENSOR_NAMES) * counts)
        current = columns["current_compressor"]
        out["compressor_duty_cycle"] = (current > COMPRESSOR_ON_AMPS).sum(axis=1) / np.maximum(valid_counts["current_compressor"], 1)
        # The ratio of the guarded means: NULL when either mean is.
        out = _guarded(out, valid_counts, counts, minutes)
        low = out["pressure_low_mean"]
        out["pressure_ratio"] = np.where(np.isfinite(low) & (low != 0), out["pressure_high_mean"] / np.where(low != 0, low, 1.0), np.nan)
        vib = columns["vibration_compressor"]
        vib_valid = ~np.isnan(vib)
        out["vibration_compressor_rms"] = np.sqrt(
            np.where(vib_valid, vib * vib, 0.0).sum(axis=1) / np.maximum(valid_counts["vibration_compressor"], 1)
        )
        spectral = FEATURES_BY_NAME[SPECTRAL]
        out[SPECTRAL] = (
            spectral_entropy_rows(vib, valid_counts["vibration_compressor"], spectral.threshold(minutes))
            if minutes in spectral.windows
            else np.full(len(counts), np.nan)
        )
    return _guarded(out, valid_counts, counts, minutes)


def _padded(values: np.ndarray, rows: np.ndarray, columns: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Values laid out one window per row, NaN where a window has fewer readings than the widest."""
    grid = np.full(shape, np.nan)
    grid[rows, columns] = values
    return grid


def window_features_frame(readings: pd.DataFrame, minutes: int) -> pd.DataFrame:
    """Features of every (device_id, window_start) of `minutes` present in `readings`.

    `readings` has device_id, ts (UTC) and the seven sensor columns (NaN or None for missing).
    Returns device_id, window_start (UTC, microseconds) and one column per feature.
    """
    if readings.empty:
        return pd.DataFrame(columns=["device_id", "window_start", "reading_count"])
    ts = readings["ts"]
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    ts_us = ts.to_numpy().astype("datetime64[us]").astype(np.int64)
    size = minutes * MICROS_PER_MINUTE
    start = ts_us - np.mod(ts_us, size)  # floor: a reading at a boundary opens the later window
    device_codes, devices = pd.factorize(readings["device_id"], sort=False)
    order = np.lexsort((ts_us, start, device_codes))
    dev_sorted, start_sorted, ts_sorted = device_codes[order], start[order], ts_us[order]
    new_group = np.empty(len(order), dtype=bool)
    new_group[0] = True
    new_group[1:] = (dev_sorted[1:] != dev_sorted[:-1]) | (start_sorted[1:] != start_sorted[:-1])
    group_starts = np.flatnonzero(new_group)
    group = np.cumsum(new_group) - 1
    counts = np.diff(np.append(group_starts, len(order)))
    rank = np.arange(len(order)) - group_starts[group]
    offsets = (ts_sorted - start_sorted) / MICROS_PER_MINUTE
    values = {s: readings[s].to_numpy(dtype=float, na_value=np.nan)[order] for s in SENSOR_NAMES}

    # Batch windows by size class (powers of two) so padding at most doubles the memory.
    size_class = np.ceil(np.log2(np.maximum(counts, 1))).astype(int)
    parts = []
    for cls in np.unique(size_class):
        groups = np.flatnonzero(size_class == cls)
        width = int(counts[groups].max())
        local = np.full(len(counts), -1)
        local[groups] = np.arange(len(groups))
        rows = local[group]
        keep = rows >= 0
        r, c = rows[keep], rank[keep]

        shape = (len(groups), width)
        features = _batch_features(
            {s: _padded(values[s][keep], r, c, shape) for s in SENSOR_NAMES}, _padded(offsets[keep], r, c, shape), counts[groups], minutes
        )
        first = group_starts[groups]
        frame = pd.DataFrame({"device_id": devices[dev_sorted[first]], "window_start": start_sorted[first].astype("datetime64[us]")})
        for name, column in features.items():
            frame[name] = column
        parts.append(frame)
    result = pd.concat(parts, ignore_index=True)
    result["window_start"] = result["window_start"].dt.tz_localize("UTC")
    return result
