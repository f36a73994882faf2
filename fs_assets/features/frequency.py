"""Frequency-domain features: spectral entropy of compressor vibration, as a numpy kernel.

The kernel is the single definition of the feature: Spark runs it per device-day in a grouped
pandas UDF (all windows of the day in one pass), and on-demand computation can call it directly.
"""

import numpy as np
import pandas as pd

from fs_assets.features.registry import FEATURES_BY_NAME

SPECTRAL = FEATURES_BY_NAME["spectral_entropy_vibration"]


def spectral_entropy(values: np.ndarray) -> float:
    """Normalised Shannon entropy of the power spectrum of `values` (NaN-free, in time order).

    NaN when there are fewer values than the registry's threshold or the signal is constant.
    """
    if len(values) < SPECTRAL.min_readings:
        return float("nan")
    x = values - values.mean()
    power = np.abs(np.fft.rfft(x))[1:] ** 2  # the DC bin is zero once the mean is removed
    total = power.sum()
    if not np.isfinite(total) or total <= 0 or len(power) < 2:
        return float("nan")
    p = power / total
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / np.log(len(power)))


def spectral_entropy_by_window(group: pd.DataFrame) -> pd.DataFrame:
    """One device's readings (ts, window_start, vibration) -> one entropy per window."""
    group = group.dropna(subset=["vibration_compressor"]).sort_values("ts")
    out = [
        (device, start, spectral_entropy(part["vibration_compressor"].to_numpy(dtype=float)))
        for (device, start), part in group.groupby(["device_id", "window_start"], sort=False)
    ]
    frame = pd.DataFrame(out, columns=["device_id", "window_start", "spectral_entropy_vibration"])
    return frame.astype({"spectral_entropy_vibration": "float64"})
