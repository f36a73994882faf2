"""Spectral entropy of compressor vibration for the built-in engine, per device-day in a pandas UDF.

The math is defined once, in `fs_assets.features.kernels.spectral_entropy_rows`.
"""

import numpy as np
import pandas as pd

from fs_assets.features.kernels import spectral_entropy_rows


def spectral_entropy(values: np.ndarray) -> float:
    """Normalised Shannon entropy of the power spectrum of `values` (NaN-free, in time order).

    NaN when there are fewer values than the registry's threshold or the signal is constant.
    The math lives once, in the batched kernel; this is its one-window form.
    """
    values = np.asarray(values, dtype=float)
    return float(spectral_entropy_rows(values[None, :], np.array([len(values)]))[0])


def spectral_entropy_by_window(group: pd.DataFrame) -> pd.DataFrame:
    """One device's readings (ts, window_start, vibration) -> one entropy per window."""
    group = group.dropna(subset=["vibration_compressor"]).sort_values("ts")
    out = [
        (device, start, spectral_entropy(part["vibration_compressor"].to_numpy(dtype=float)))
        for (device, start), part in group.groupby(["device_id", "window_start"], sort=False)
    ]
    frame = pd.DataFrame(out, columns=["device_id", "window_start", "spectral_entropy_vibration"])
    return frame.astype({"spectral_entropy_vibration": "float64"})
