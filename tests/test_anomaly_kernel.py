"""The multivariate anomaly score on small frames: relations between sensors, NULLs, the fleet
fallback, the explanation of the score and its serialisation, against brute-force numpy."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2

from fs_assets.training.anomaly import (
    ReferenceModel,
    fit_device_references,
    fit_reference,
    score_windows,
    score_windows_univariate,
)
from fs_domain.models import ANOMALY_THRESHOLD, MIN_DEVICE_WINDOWS

pytestmark = pytest.mark.unit

CURRENT, RATIO, VIBRATION, DISCHARGE = "current_compressor_mean", "pressure_ratio", "vibration_compressor_mean", "temp_discharge_mean"
FEATURES = (CURRENT, RATIO, VIBRATION, DISCHARGE)


def healthy_windows(device: str, n: int, seed: int) -> pd.DataFrame:
    """A compressor whose current and pressure ratio rise and fall together with its load."""
    rng = np.random.default_rng(seed)
    load = rng.normal(size=n)
    return pd.DataFrame(
        {
            "device_id": device,
            CURRENT: 8.0 + 1.0 * load + 0.1 * rng.normal(size=n),
            RATIO: 4.0 + 0.5 * load + 0.05 * rng.normal(size=n),
            VIBRATION: rng.normal(2.0, 0.2, size=n),
            DISCHARGE: rng.normal(70.0, 2.0, size=n),
        }
    )


def at(model: ReferenceModel, device: str, **z: float) -> dict:
    """A window whose features sit `z` of the model's scales from its centre (0 for the others)."""
    row = {"device_id": device}
    for name, centre, scale in zip(model.features, model.centre, model.scale):
        row[name] = centre + z.get(name, 0.0) * scale
    return row


def brute_force_score(model: ReferenceModel, row: pd.Series, names: list[str]) -> float:
    """sqrt(D² / k / calibration), D² from the inverse of the covariance's block of `names`."""
    index = [model.features.index(n) for n in names]
    covariance = np.linalg.inv(model.precision)[np.ix_(index, index)]
    z = (row[names].to_numpy(float) - model.centre[index]) / model.scale[index]
    return float(np.sqrt(z @ np.linalg.inv(covariance) @ z / len(names) / model.calibration))


def test_a_window_that_breaks_the_sensors_relation_scores_high_and_names_the_pair():
    model = fit_reference(healthy_windows("unit-1", 60, seed=1), FEATURES)
    # Each feature within its own healthy range (two of its scales): together, or against each other.
    windows = pd.DataFrame([at(model, "unit-1", **{CURRENT: 2.0, RATIO: 2.0}), at(model, "unit-1", **{CURRENT: 2.0, RATIO: -2.0})])
    scored = score_windows(windows, FEATURES, fleet=model, devices={"unit-1": model})
    kept, broken = scored.iloc[0], scored.iloc[1]
    assert kept["anomaly_score"] < ANOMALY_THRESHOLD < broken["anomaly_score"]
    assert broken["top_pair"] == f"{CURRENT}×{RATIO}"
    assert set(broken["top_features"][:2]) == {CURRENT, RATIO} and broken["top_feature"] in (CURRENT, RATIO)
    assert abs(broken["top_z"]) == pytest.approx(2.0)
    # Feature by feature the two windows are equally far off: only the relation tells them apart.
    statistics = {
        name: {"p25": c - 0.6745 * s, "p50": c, "p75": c + 0.6745 * s, "std": s}
        for name, c, s in zip(model.features, model.centre, model.scale)
    }
    alone = score_windows_univariate(windows, statistics, FEATURES)["anomaly_score"]
    assert alone.iloc[0] == pytest.approx(alone.iloc[1])


def test_the_score_is_the_mahalanobis_distance_and_its_terms_explain_it():
    model = fit_reference(healthy_windows("unit-1", 40, seed=2), FEATURES)
    assert model.features == FEATURES and model.windows == 40 and 0 < model.shrinkage < 1
    deviation = {VIBRATION: 4.0, DISCHARGE: -2.0, CURRENT: 1.0, RATIO: 0.3}
    windows = pd.DataFrame([at(model, "unit-1", **deviation), at(model, "unit-1")])
    scored = score_windows(windows, FEATURES, fleet=model)
    assert scored["anomaly_score"].iloc[0] == pytest.approx(brute_force_score(model, windows.iloc[0], list(FEATURES)))
    assert scored["anomaly_score"].iloc[1] == pytest.approx(0.0, abs=1e-9)
    z = np.array([deviation[name] for name in FEATURES])
    terms = z * (model.precision @ z)
    assert terms.sum() == pytest.approx(scored["anomaly_score"].iloc[0] ** 2 * len(FEATURES) * model.calibration)
    assert scored["top_features"].iloc[0] == [FEATURES[i] for i in np.argsort(-terms)[:3]]
    assert scored["top_feature"].iloc[0] == VIBRATION and scored["top_z"].iloc[0] == pytest.approx(4.0)
    assert list(scored["features_scored"]) == [4, 4]


def test_a_healthy_window_scores_about_one_whatever_the_windows_a_reference_was_fitted_on():
    for n in (MIN_DEVICE_WINDOWS, 8, 30, 200):
        medians = []
        for seed in range(30):
            frame = healthy_windows("unit-1", n + 50, seed=100 + seed)
            model = fit_reference(frame.iloc[:n], FEATURES)
            medians.append(score_windows(frame.iloc[n:], FEATURES, fleet=model)["anomaly_score"].median())
        # what a reference that generalised perfectly would give: sqrt(chi-square median / k); uncalibrated,
        # a reference on few windows scores healthy windows high, and a heavily shrunk one low
        assert np.median(medians) == pytest.approx(np.sqrt(chi2.median(len(FEATURES)) / len(FEATURES)), rel=0.08), n


def test_nulls_in_fitting_and_scoring():
    frame = healthy_windows("unit-1", 30, seed=3)
    frame["temp_evaporator_mean"] = np.where(np.arange(30) < 5, -20.0, np.nan)  # present in 5 of 30 windows
    frame.loc[[0, 1], VIBRATION] = np.nan
    model = fit_reference(frame, (*FEATURES, "temp_evaporator_mean"))
    assert model.features == FEATURES and model.windows == 28
    # A window with a NULL feature is scored on the others, with their relations kept.
    windows = pd.DataFrame([at(model, "unit-1", **{CURRENT: 2.0, RATIO: -1.0}), {"device_id": "unit-1"}])
    windows.loc[0, VIBRATION] = np.nan
    scored = score_windows(windows, FEATURES, fleet=model)
    assert scored["features_scored"].tolist() == [3, 0]
    assert scored["anomaly_score"].iloc[0] == pytest.approx(brute_force_score(model, windows.iloc[0], [CURRENT, RATIO, DISCHARGE]))
    assert np.isnan(scored["anomaly_score"].iloc[1]) and scored["top_feature"].iloc[1] is None and scored["top_pair"].iloc[1] is None
    # Too few complete windows: the feature missing most often goes, not the reference.
    sparse = healthy_windows("unit-1", 8, seed=4)
    sparse.loc[[0, 1, 2], DISCHARGE] = np.nan
    assert fit_reference(sparse, FEATURES).features == (CURRENT, RATIO, VIBRATION)
    assert fit_reference(healthy_windows("unit-1", MIN_DEVICE_WINDOWS - 1, seed=5), FEATURES) is None


def test_a_device_without_its_own_reference_is_scored_against_the_fleets_and_flagged():
    fleet_windows = pd.concat([healthy_windows(f"unit-{i}", 30, seed=10 + i) for i in range(3, 9)])
    hot = healthy_windows("unit-1", 30, seed=6).assign(**{DISCHARGE: lambda f: f[DISCHARGE] + 30.0})  # runs hotter, and always has
    new = healthy_windows("unit-2", MIN_DEVICE_WINDOWS - 1, seed=7)
    fleet = fit_reference(fleet_windows, FEATURES)
    devices = fit_device_references(pd.concat([fleet_windows, hot, new]), FEATURES)
    assert "unit-1" in devices and "unit-2" not in devices and len(devices) == 7
    recent = pd.DataFrame([at(devices["unit-1"], "unit-1"), at(devices["unit-1"], "unit-2")])
    scored = score_windows(recent, FEATURES, fleet=fleet, devices=devices)
    assert scored["reference"].tolist() == ["device", "fleet"]
    # unit-1's own normal is not an anomaly for it; the same window from a unit held to the fleet's is.
    assert scored["anomaly_score"].iloc[0] == pytest.approx(0.0, abs=1e-9)
    assert scored["anomaly_score"].iloc[1] > ANOMALY_THRESHOLD and scored["top_feature"].iloc[1] == DISCHARGE
    assert score_windows(recent, FEATURES, fleet=fleet)["reference"].tolist() == ["fleet", "fleet"]
    assert score_windows(recent, FEATURES, fleet=fleet)["anomaly_score"].iloc[0] == pytest.approx(scored["anomaly_score"].iloc[1])


def test_a_reference_read_back_from_json_scores_identically():
    model = fit_reference(healthy_windows("unit-1", 25, seed=8), FEATURES)
    again = ReferenceModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again.features == model.features and again.windows == model.windows and again.calibration == model.calibration
    windows = healthy_windows("unit-1", 10, seed=9)
    windows.loc[3, RATIO] = np.nan
    before = score_windows(windows, FEATURES, fleet=model, devices={"unit-1": model})
    after = score_windows(windows, FEATURES, fleet=again, devices={"unit-1": again})
    pd.testing.assert_frame_equal(before, after)


def test_the_previous_scorer_is_each_features_robust_z_alone():
    statistics = {name: {"p25": 0.0, "p50": 1.0, "p75": 1.349, "std": 1.0} for name in FEATURES}
    frame = pd.DataFrame({name: [1.0] for name in FEATURES}).assign(**{DISCHARGE: 4.0})
    scored = score_windows_univariate(frame, statistics, FEATURES)
    assert scored["anomaly_score"].iat[0] == pytest.approx(np.sqrt(9 / len(FEATURES))) and scored["top_feature"].iat[0] == DISCHARGE


@pytest.mark.parametrize("shrinkage", ["oas", "ledoit_wolf"])
def test_shrinkage_keeps_a_short_reference_invertible_and_fades_with_many_windows(shrinkage):
    rng = np.random.default_rng(11)
    wide = pd.DataFrame(rng.normal(size=(MIN_DEVICE_WINDOWS, 10)), columns=[f"f{i}" for i in range(10)])
    short = fit_reference(wide, tuple(wide.columns), shrinkage=shrinkage)
    assert short.shrinkage > 0.5 and np.all(np.linalg.eigvalsh(short.precision) > 0)
    long = healthy_windows("unit-1", 5000, seed=12)
    model = fit_reference(long, FEATURES, shrinkage=shrinkage)
    z = (long[list(FEATURES)].to_numpy() - model.centre) / model.scale
    assert model.shrinkage < 0.01
    assert np.allclose(np.linalg.inv(model.precision), np.cov(z.T, bias=True), atol=0.01)


def test_devices_with_different_feature_lists_score_in_one_call_as_they_would_alone():
    fleet_windows = pd.concat([healthy_windows(f"unit-{i}", 20, seed=20 + i) for i in range(1, 4)])
    fleet_windows.loc[fleet_windows["device_id"] == "unit-2", RATIO] = np.nan  # unit-2 has no pressure ratio at all
    devices = fit_device_references(fleet_windows, FEATURES)
    assert devices["unit-2"].features == (CURRENT, VIBRATION, DISCHARGE) and devices["unit-1"].features == FEATURES
    fleet = fit_reference(fleet_windows, FEATURES)
    recent = pd.concat([healthy_windows(f"unit-{i}", 5, seed=30 + i) for i in range(1, 5)], ignore_index=True)
    together = score_windows(recent, FEATURES, fleet=fleet, devices=devices)
    for device, rows in recent.groupby("device_id"):
        alone = score_windows(rows, FEATURES, fleet=fleet, devices={device: devices[device]} if device in devices else None)
        pd.testing.assert_frame_equal(together.loc[rows.index], alone)
    assert together.loc[recent["device_id"] == "unit-2", "features_scored"].eq(3).all()
    assert together.loc[recent["device_id"] == "unit-4", "reference"].eq("fleet").all()


def test_rows_scored_in_chunks_score_as_they_would_at_once(monkeypatch):
    from fs_assets.training import anomaly

    windows = pd.concat([healthy_windows(f"unit-{i}", 12, seed=i) for i in range(4)], ignore_index=True)
    windows.loc[[2, 17, 30], RATIO] = np.nan  # rows of another feature pattern, chunked apart
    devices = fit_device_references(windows, FEATURES)
    fleet = fit_reference(windows, FEATURES)
    at_once = score_windows(windows, FEATURES, fleet, devices)
    monkeypatch.setattr(anomaly, "CHUNK_ROWS", 5)
    pd.testing.assert_frame_equal(score_windows(windows, FEATURES, fleet, devices), at_once)
