"""Vectorised feature kernels: every feature of every window of many devices in one numpy pass.

Readings are grouped into windows, and each window's values are laid out as one row of a padded
2-D array (NaN-padded, windows of similar size batched together so padding never more than
doubles memory). Every statistic is then a whole-array numpy operation. This module is the single
definition of the window features: Spark runs it per partition (`compute.window_features`), and
on-demand computation can call `window_features_frame` on a pandas frame with the same result.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fs_assets.features.registry import COMPRESSOR_ON_AMPS, FEATURES_BY_NAME, PER_SENSOR_STATISTICS
from fs_assets.ingest.contract import SENSOR_NAMES

MICROS_PER_MINUTE = 60_000_000
P95 = 0.95
MIN_READINGS = {stat: spec[1] for stat, spec in PER_SENSOR_STATISTICS.items()}
SPECTRAL_MIN = FEATURES_BY_NAME["spectral_entropy_vibration"].min_readings
SPECTRAL_WINDOWS = FEATURES_BY_NAME["spectral_entropy_vibration"].windows


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


def spectral_entropy_rows(values: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Row-wise normalised spectral entropy; NaN below the threshold or for a constant signal."""
    out = np.full(len(values), np.nan)
    # Move each row's valid values to the front, in time order, then batch rows of equal length.
    compact = np.take_along_axis(values, np.argsort(np.isnan(values), axis=1, kind="stable"), axis=1)
    for length in np.unique(n[n >= SPECTRAL_MIN]):
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
    present = np.zeros(len(counts))
    with np.errstate(invalid="ignore", divide="ignore"):
        for sensor in SENSOR_NAMES:
            v = columns[sensor]
            valid = ~np.isnan(v)
            n = valid.sum(axis=1)
            present += n
            mean = np.where(n >= 1, np.where(valid, v, 0.0).sum(axis=1) / np.maximum(n, 1), np.nan)
            dev = np.where(valid, v - mean[:, None], 0.0)
            out[f"{sensor}_mean"] = np.where(n >= MIN_READINGS["mean"], mean, np.nan)
            out[f"{sensor}_std"] = np.where(n >= MIN_READINGS["std"], np.sqrt((dev * dev).sum(axis=1) / np.maximum(n - 1, 1)), np.nan)
            out[f"{sensor}_min"] = np.where(n >= MIN_READINGS["min"], np.where(valid, v, np.inf).min(axis=1), np.nan)
            out[f"{sensor}_max"] = np.where(n >= MIN_READINGS["max"], np.where(valid, v, -np.inf).max(axis=1), np.nan)
            out[f"{sensor}_p95"] = np.where(n >= MIN_READINGS["p95"], _percentile(v, n, P95), np.nan)
            # Least squares against minutes since window_start, on the pairs where the sensor is present.
            x_mean = np.where(valid, x, 0.0).sum(axis=1) / np.maximum(n, 1)
            x_dev = np.where(valid, x - x_mean[:, None], 0.0)
            sxx = (x_dev * x_dev).sum(axis=1)
            slope = (x_dev * dev).sum(axis=1) / sxx
            out[f"{sensor}_slope"] = np.where((n >= MIN_READINGS["slope"]) & (sxx > 0), slope, np.nan)
        out["sensor_completeness"] = present / (len(SENSOR_NAMES) * counts)
        current = columns["current_compressor"]
        n_current = (~np.isnan(current)).sum(axis=1)
        running = (current > COMPRESSOR_ON_AMPS).sum(axis=1)
        out["compressor_duty_cycle"] = np.where(n_current >= 1, running / np.maximum(n_current, 1), np.nan)
        low = out["pressure_low_mean"]
        out["pressure_ratio"] = np.where(np.isfinite(low) & (low != 0), out["pressure_high_mean"] / np.where(low != 0, low, 1.0), np.nan)
        vib = columns["vibration_compressor"]
        vib_valid = ~np.isnan(vib)
        n_vib = vib_valid.sum(axis=1)
        out["vibration_compressor_rms"] = np.where(n_vib >= 1, np.sqrt(np.where(vib_valid, vib * vib, 0.0).sum(axis=1) / np.maximum(n_vib, 1)), np.nan)
        out["spectral_entropy_vibration"] = spectral_entropy_rows(vib, n_vib) if minutes in SPECTRAL_WINDOWS else np.full(len(counts), np.nan)
    return out


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

        def padded(source: np.ndarray) -> np.ndarray:
            grid = np.full((len(groups), width), np.nan)
            grid[r, c] = source[keep]
            return grid

        features = _batch_features({s: padded(values[s]) for s in SENSOR_NAMES}, padded(offsets), counts[groups], minutes)
        first = group_starts[groups]
        frame = pd.DataFrame({"device_id": devices[dev_sorted[first]], "window_start": start_sorted[first].astype("datetime64[us]")})
        for name, column in features.items():
            frame[name] = column
        parts.append(frame)
    result = pd.concat(parts, ignore_index=True)
    result["window_start"] = result["window_start"].dt.tz_localize("UTC")
    return result
