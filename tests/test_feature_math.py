"""Feature math against an independent pandas/numpy computation, feature by feature, edge cases included."""

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from fs_assets.features.compute import window_features
from fs_domain.contract import SENSOR_NAMES
from fs_domain.features import COMPRESSOR_ON_AMPS, FEATURES, features_for, table_columns

COMPUTED_AT = datetime(2026, 2, 1, tzinfo=timezone.utc)
# The design's minimum readings (DESIGN.md, features contract), written out independently of the
# registry: per window size, for a per-sensor aggregate (std and slope need at least 2), the
# cross-sensor ratios and spectral entropy.
AGGREGATE_MIN = {15: 1, 60: 4, 1440: 100}
SPECTRAL_MIN = {60: 60, 1440: 100}


def _least(minutes: int, statistic_needs: int = 1) -> int:
    return max(statistic_needs, AGGREGATE_MIN[minutes])


def _readings() -> pd.DataFrame:
    rng = np.random.default_rng(42)
    rows = []
    # dev-a: a full day at 1/minute with on/off compressor and a few NULLs
    for minute in range(0, 1440):
        rows.append(("dev-a", pd.Timestamp("2026-01-05", tz="UTC") + pd.Timedelta(minutes=minute)))
    # dev-b: sub-minute (1 Hz, like SKAB) for 20 minutes around 10:00
    for second in range(0, 1200):
        rows.append(("dev-b", pd.Timestamp("2026-01-05 09:50", tz="UTC") + pd.Timedelta(seconds=second)))
    # dev-c: a single reading, exactly on a window boundary (belongs to the later window)
    rows.append(("dev-c", pd.Timestamp("2026-01-05 10:15", tz="UTC")))
    # dev-d: readings on both sides of midnight (two days)
    for minute in range(-30, 30):
        rows.append(("dev-d", pd.Timestamp("2026-01-06", tz="UTC") + pd.Timedelta(minutes=minute)))
    frame = pd.DataFrame(rows, columns=["device_id", "ts"])
    n = len(frame)
    frame["temp_evaporator"] = rng.normal(-20, 1, n)
    frame["temp_condenser"] = rng.normal(40, 2, n)
    frame["temp_discharge"] = rng.normal(70, 5, n) + np.arange(n) * 0.001
    frame["current_compressor"] = np.where(rng.random(n) < 0.5, rng.normal(8, 0.3, n), 0.1)
    frame["pressure_high"] = rng.normal(15, 0.5, n)
    frame["pressure_low"] = rng.normal(2, 0.1, n)
    frame["vibration_compressor"] = np.abs(rng.normal(2, 0.5, n)) + np.sin(np.arange(n) / 3.0)
    # NULL sensors: one whole sensor missing for dev-b, scattered NULLs for dev-a
    frame.loc[frame["device_id"] == "dev-b", "pressure_low"] = np.nan
    holes = (frame["device_id"] == "dev-a") & (rng.random(n) < 0.05)
    frame.loc[holes, "temp_evaporator"] = np.nan
    # a window where temp_condenser has exactly one value (std and slope NULL, mean not)
    lonely = (frame["device_id"] == "dev-a") & (frame["ts"] >= "2026-01-05 03:00") & (frame["ts"] < "2026-01-05 03:15")
    frame.loc[lonely, "temp_condenser"] = np.nan
    frame.loc[frame.index[lonely][0], "temp_condenser"] = 41.0
    return frame


def _spectral_entropy(x: np.ndarray, minutes: int) -> float:
    if minutes not in SPECTRAL_MIN or len(x) < SPECTRAL_MIN[minutes]:
        return np.nan
    spectrum = np.abs(np.fft.fft(x - x.mean())) ** 2
    half = spectrum[1 : len(x) // 2 + 1]
    if half.sum() <= 0:
        return np.nan
    p = half / half.sum()
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / np.log(len(half)))


def _reference(frame: pd.DataFrame, minutes: int) -> pd.DataFrame:
    """Independent window features: pandas groupby + numpy, no Spark, no project code."""
    frame = frame.copy()
    frame["window_start"] = frame["ts"].dt.floor(f"{minutes}min")
    out = []
    for (device, start), g in frame.sort_values("ts").groupby(["device_id", "window_start"]):
        row = {"device_id": device, "window_start": start, "reading_count": len(g)}
        x_all = (g["ts"] - start).dt.total_seconds().to_numpy() / 60.0
        present = 0
        one, two = _least(minutes), _least(minutes, 2)
        for s in SENSOR_NAMES:
            mask = g[s].notna().to_numpy()
            v, x = g[s].to_numpy()[mask], x_all[mask]
            present += len(v)
            row[f"{s}_mean"] = v.mean() if len(v) >= one else np.nan
            row[f"{s}_std"] = v.std(ddof=1) if len(v) >= two else np.nan
            row[f"{s}_min"] = v.min() if len(v) >= one else np.nan
            row[f"{s}_max"] = v.max() if len(v) >= one else np.nan
            row[f"{s}_p95"] = np.percentile(v, 95) if len(v) >= one else np.nan
            row[f"{s}_slope"] = np.polyfit(x, v, 1)[0] if len(v) >= two else np.nan
        row["sensor_completeness"] = present / (7 * len(g))
        low = row["pressure_low_mean"]
        row["pressure_ratio"] = row["pressure_high_mean"] / low if np.isfinite(low) and low != 0 else np.nan
        cur = g["current_compressor"].dropna().to_numpy()
        row["compressor_duty_cycle"] = (cur > COMPRESSOR_ON_AMPS).mean() if len(cur) >= one else np.nan
        vib = g["vibration_compressor"].dropna().to_numpy()
        row["spectral_entropy_vibration"] = _spectral_entropy(vib, minutes)
        row["vibration_compressor_rms"] = np.sqrt(np.mean(vib**2)) if len(vib) >= one else np.nan
        out.append(row)
    return pd.DataFrame(out)


@pytest.fixture(scope="module")
def readings(spark):
    frame = _readings()
    frame["ts"] = frame["ts"].astype("datetime64[us, UTC]")
    return frame, spark.createDataFrame(frame)


@pytest.mark.integration
@pytest.mark.parametrize("minutes", [15, 60, 1440])
def test_every_feature_matches_numpy(readings, minutes):
    frame, df = readings
    got = window_features(df, minutes, "v2", COMPUTED_AT).toPandas()
    want = _reference(frame, minutes)
    got["window_start"] = (
        pd.to_datetime(got["window_start"]).dt.tz_localize("UTC") if got["window_start"].dt.tz is None else got["window_start"]
    )
    key = ["device_id", "window_start"]
    merged = want.merge(got, on=key, how="outer", suffixes=("_want", "_got"), indicator=True)
    assert len(merged) > 0 and (merged["_merge"] == "both").all(), merged.loc[merged["_merge"] != "both", key + ["_merge"]]
    for feature in features_for("v2"):
        w, g = merged[f"{feature.name}_want"].astype(float), merged[f"{feature.name}_got"].astype(float)
        assert (w.isna() == g.isna()).all(), f"{feature.name}: NULLs differ at {merged.loc[w.isna() != g.isna(), key].values[:3]}"
        np.testing.assert_allclose(g[w.notna()], w[w.notna()], rtol=1e-9, atol=1e-12, err_msg=feature.name)


@pytest.mark.integration
def test_edges(readings):
    _, df = readings
    rows = window_features(df, 15, "v1", COMPUTED_AT).toPandas().set_index(["device_id", "window_start"]).sort_index()
    ts = lambda s: pd.Timestamp(s)  # noqa: E731  (toPandas gives naive UTC)
    # a reading exactly at 10:15 opens the 10:15 window, and alone its std and slope are NULL
    single = rows.loc[("dev-c", ts("2026-01-05 10:15"))]
    assert single["reading_count"] == 1 and np.isnan(single["temp_condenser_std"]) and np.isnan(single["temp_condenser_slope"])
    assert single["temp_condenser_mean"] == single["temp_condenser_p95"]
    # a window with one non-NULL value of a sensor: mean set, std NULL
    lonely = rows.loc[("dev-a", ts("2026-01-05 03:00"))]
    assert lonely["temp_condenser_mean"] == 41.0 and np.isnan(lonely["temp_condenser_std"])
    # a sensor NULL throughout: its features and the ratio are NULL, completeness drops
    b = rows.loc[("dev-b", ts("2026-01-05 10:00"))]
    assert np.isnan(b["pressure_low_mean"]) and np.isnan(b["pressure_ratio"]) and b["sensor_completeness"] == pytest.approx(6 / 7)
    assert b["reading_count"] == 600  # 10:00-10:10 at 1 Hz
    # windows on both sides of midnight land on their own dates
    d = rows.loc["dev-d"]
    assert sorted({t.date().isoformat() for t in d.index}) == ["2026-01-05", "2026-01-06"]


@pytest.mark.integration
def test_columns_follow_the_registry(readings):
    _, df = readings
    got = window_features(df, 60, "v1", COMPUTED_AT)
    assert got.columns == [c[0] for c in table_columns("v1")]
    assert "vibration_compressor_rms" not in got.columns
    assert window_features(df, 60, "v2", COMPUTED_AT).columns == [c[0] for c in table_columns("v2")]
    assert len(FEATURES) >= 45


@pytest.mark.unit
def test_kernel_streaming_never_splits_a_device(monkeypatch):
    from fs_assets.features import compute, kernels

    frame = _readings().sort_values(["device_id", "ts"]).reset_index(drop=True)
    frame["ts"] = frame["ts"].astype("datetime64[us, UTC]")
    monkeypatch.setattr(compute, "KERNEL_FLUSH_ROWS", 100)
    batches = [frame.iloc[i : i + 37] for i in range(0, len(frame), 37)]
    streamed = pd.concat(compute._kernel_partition(iter(batches), 60)).sort_values(["device_id", "window_start"]).reset_index(drop=True)
    whole = kernels.window_features_frame(frame, 60)[streamed.columns].sort_values(["device_id", "window_start"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(streamed, whole)


@pytest.mark.unit
def test_readings_before_the_open_window_are_exactly_those_of_closed_windows():
    from fs_assets.features.windows import closed_until

    at = datetime(2026, 1, 5, 10, 20, 30, tzinfo=timezone.utc)
    assert closed_until(at, 15) == datetime(2026, 1, 5, 10, 15, tzinfo=timezone.utc)
    assert closed_until(at, 60) == datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)
    assert closed_until(at, 1440) == datetime(2026, 1, 5, tzinfo=timezone.utc)  # a day in progress: nothing to read
    # At a boundary the window ending there is closed (window_end <= computed_at) and the next is open.
    assert closed_until(datetime(2026, 1, 5, 10, 15, tzinfo=timezone.utc), 15) == datetime(2026, 1, 5, 10, 15, tzinfo=timezone.utc)


@pytest.mark.integration
def test_a_window_still_running_at_computed_at_is_not_written(readings):
    _, df = readings
    # 10:20 on the first day: dev-a's 10:15-10:30 window is running, 10:00-10:15 has just ended.
    running_at = datetime(2026, 1, 5, 10, 20, tzinfo=timezone.utc)
    got = window_features(df, 15, "v1", running_at).toPandas()
    ends = pd.to_datetime(got["window_end"], utc=True)
    assert len(got) and (ends <= pd.Timestamp(running_at)).all()
    assert pd.Timestamp("2026-01-05 10:15", tz="UTC") in set(ends[got["device_id"] == "dev-a"])


@pytest.mark.unit
@pytest.mark.parametrize(
    "name", ["compressor_duty_cycle", "vibration_compressor_rms", "pressure_ratio", "temp_discharge_p95", "spectral_entropy_vibration"]
)
def test_the_kernel_nulls_every_feature_below_its_registry_threshold(monkeypatch, name):
    """Raising one feature's threshold in the registry above a window's readings makes that feature, and only it, NULL."""
    from dataclasses import replace

    from fs_assets.features import kernels

    frame = _readings()
    frame = frame[frame["device_id"] == "dev-a"]
    before = kernels.window_features_frame(frame, 60)
    assert len(before) > 0 and before[name].notna().all()
    raised = tuple(replace(f, min_readings={m: 10_000 for m in f.windows}) if f.name == name else f for f in kernels.FEATURES)
    monkeypatch.setattr(kernels, "FEATURES", raised)
    after = kernels.window_features_frame(frame, 60)
    assert after[name].isna().all(), f"{name} ignores its registry threshold"
    others = [c for c in before.columns if c not in (name, "device_id", "window_start") and not (name == "pressure_ratio" and c == name)]
    pd.testing.assert_frame_equal(after[others], before[others])


@pytest.mark.unit
def test_the_registry_states_the_designs_minimum_readings():
    """24-hour aggregates NULL below 100 readings, 1-hour spectral entropy below 60, and every other
    feature's threshold per window size as the reference above states it."""
    for feature in FEATURES:
        for minutes in feature.windows:
            if feature.name in ("reading_count", "sensor_completeness"):
                want = 0
            elif feature.name == "spectral_entropy_vibration":
                want = SPECTRAL_MIN[minutes]
            else:
                want = _least(minutes, 2 if feature.statistic in ("std", "slope") else 1)
            assert feature.threshold(minutes) == want, (feature.name, minutes)
    day_aggregates = [f for f in FEATURES if 1440 in f.windows and f.name not in ("reading_count", "sensor_completeness")]
    assert len(day_aggregates) >= 45 and {f.threshold(1440) for f in day_aggregates} == {100}
    spectral = next(f for f in FEATURES if f.name == "spectral_entropy_vibration")
    with pytest.raises(ValueError, match="no 15-minute window"):
        spectral.threshold(15)
