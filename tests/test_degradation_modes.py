"""The simulator's opt-in degradations: each moves the sensors it claims, from its onset to the event
that ends it, and a fleet without them is, byte for byte, the fleet the simulator always made."""

import hashlib
from dataclasses import replace
from datetime import date

import numpy as np
import pandas as pd
import pytest

from fs_domain.features import COMPRESSOR_ON_AMPS
from fs_resources.simulator import fleet
from fs_resources.simulator.fleet import BEARING_WEAR, REFRIGERANT_LEAK, SENSOR_DRIFT, FleetSpec

pytestmark = pytest.mark.unit

START = date(2026, 1, 5)
# Digests of these fleets as the simulator made them before it had opt-in degradations: every
# transport fault on, compressor overloads and unlabelled drift on a quarter of the devices.
BEFORE = {
    FleetSpec(40, START, 4, seed=5, degrading_share=0.25, drifting_share=0.25, outage_probability=0.3): (
        "320c06552d10416db08ab0e1528be6aec07064bf190e4f3bbd9f991996b5f84a"
    ),
    FleetSpec(12, START, 2): "aacda95018f035a4e3ce6c4f9e01e7e8bc7cfbfdeec9d9d28d55b473a9df54c3",
}
SHARE_FIELD = {REFRIGERANT_LEAK: "leak_share", BEARING_WEAR: "bearing_wear_share", SENSOR_DRIFT: "sensor_fault_share"}


def frame_digest(frame: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    for name in frame.columns:
        digest.update(name.encode())
        column = frame[name]
        if pd.api.types.is_datetime64_any_dtype(column):
            digest.update(column.astype("int64").to_numpy().tobytes())
        elif column.dtype == object:
            digest.update("\x1f".join(map(str, column)).encode())
        else:
            digest.update(np.ascontiguousarray(column.to_numpy(dtype="float64")).tobytes())
    return digest.hexdigest()


def fleet_digest(spec: FleetSpec) -> str:
    """Registry, maintenance events, and every day's on-time, conflicting, late rows and declared gaps."""
    profile = fleet.build_profile(spec)
    digest = hashlib.sha256()
    digest.update(frame_digest(fleet.registry_frame(profile, spec)).encode())
    digest.update(frame_digest(fleet.maintenance_frame(profile, spec)).encode())
    for day_index in range(spec.days):
        day = fleet.simulate_day_with_gaps(spec, profile, day_index)
        for frame in (day.on_time, day.conflicts, day.late, day.gaps):
            digest.update(frame_digest(frame).encode())
    return digest.hexdigest()


@pytest.mark.parametrize("spec", list(BEFORE), ids=["faults-and-overloads", "default"])
def test_new_fields_at_their_defaults_make_the_same_fleet_as_before(spec):
    explicit = replace(
        spec, leak_share=0.0, bearing_wear_share=0.0, sensor_fault_share=0.0, degradation_onset_after_day=0.0, site_weather_sd=0.0
    )
    assert fleet_digest(explicit) == BEFORE[spec]
    assert not (fleet.build_profile(explicit).degradation > 0).any()


def readings(spec: FleetSpec) -> pd.DataFrame:
    profile = fleet.build_profile(spec)
    return pd.concat([fleet.simulate_day(spec, profile, d)[0] for d in range(spec.days)], ignore_index=True)


def degraded_and_healthy(mode: str, days: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, FleetSpec]:
    """Every device of a small clean fleet degrading in `mode` after day 1, and the same fleet without it:
    (degraded readings, healthy readings, ground truth, spec)."""
    healthy = FleetSpec.clean(devices=5, start=START, days=days, seed=3)
    spec = replace(healthy, **{SHARE_FIELD[mode]: 1.0}, degradation_onset_after_day=1.0)
    truth = fleet.degradation_frame(fleet.build_profile(spec), spec)
    for column in ("onset", "event_time"):
        truth[column] = pd.to_datetime(truth[column], utc=True)
    return readings(spec), readings(healthy), truth, spec


def side_by_side(degraded: pd.DataFrame, healthy: pd.DataFrame) -> pd.DataFrame:
    return degraded.merge(healthy, on=["device_id", "ts"], how="outer", suffixes=("", "_healthy"), indicator=True)


@pytest.mark.parametrize("mode,days", [(REFRIGERANT_LEAK, 10), (BEARING_WEAR, 14), (SENSOR_DRIFT, 12)])
def test_each_mode_starts_at_its_onset_and_ends_in_its_event(mode, days):
    degraded, healthy, truth, spec = degraded_and_healthy(mode, days)
    assert len(truth) == 5 and set(truth["mode"]) == {mode}
    start = pd.Timestamp(START, tz="UTC")
    assert (truth["onset"] >= start + pd.Timedelta(days=1)).all() and (truth["event_time"] <= start + pd.Timedelta(days=days)).all()
    events = fleet.maintenance_frame(fleet.build_profile(spec), spec).assign(event_time=lambda f: pd.to_datetime(f["event_time"], utc=True))
    both = side_by_side(degraded, healthy)
    sensors = list(fleet.SENSOR_NAMES)
    for row in truth.itertuples():
        mine = both[both["device_id"] == row.device_id]
        before, after = mine[mine["ts"] < row.onset], mine[mine["ts"] >= row.onset]
        # Before its onset the device reads exactly what it would healthy.
        assert (before["_merge"] == "both").all()
        assert np.array_equal(before[sensors].to_numpy(), before[[f"{s}_healthy" for s in sensors]].to_numpy())
        # From its onset on, it does not.
        assert not np.array_equal(after[sensors].to_numpy(), after[[f"{s}_healthy" for s in sensors]].to_numpy(), equal_nan=True)
        own = events[events["device_id"] == row.device_id].sort_values("event_time")
        if mode == SENSOR_DRIFT:
            # A service recalibrates the sensor: no failure, and from then on the readings are healthy again.
            assert list(own["event_type"]) == ["service"] and own["event_time"].iat[0] == row.event_time
            assert own["component"].iat[0] == row.sensor
            serviced = mine[mine["ts"] >= row.event_time]
            assert len(serviced) and np.array_equal(serviced[sensors].to_numpy(), serviced[[f"{s}_healthy" for s in sensors]].to_numpy())
        else:
            # A failure at the event, silence until the service six hours later, healthy readings after.
            assert list(own["event_type"]) == ["failure", "service"] and own["event_time"].iat[0] == row.event_time
            down = mine[(mine["ts"] >= row.event_time) & (mine["ts"] < row.event_time + pd.Timedelta(hours=6))]
            assert len(down) == 360 and (down["_merge"] == "right_only").all()
            repaired = mine[mine["ts"] >= row.event_time + pd.Timedelta(hours=6)]
            assert np.array_equal(repaired[sensors].to_numpy(), repaired[[f"{s}_healthy" for s in sensors]].to_numpy())


def last_half_day(mode: str, days: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Each device's readings over the 12 hours before its event, degraded and healthy, and the truth."""
    degraded, healthy, truth, _ = degraded_and_healthy(mode, days)
    window = truth[["device_id", "event_time"]]

    def cut(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.merge(window, on="device_id")
        return frame[(frame["ts"] < frame["event_time"]) & (frame["ts"] >= frame["event_time"] - pd.Timedelta(hours=12))]

    return cut(degraded), cut(healthy), truth


def per_device(frame: pd.DataFrame) -> pd.DataFrame:
    on = frame["current_compressor"] > COMPRESSOR_ON_AMPS
    return pd.DataFrame(
        {
            "suction": frame.groupby("device_id")["pressure_low"].mean(),
            "ratio": (frame["pressure_high"] / frame["pressure_low"]).groupby(frame["device_id"]).mean(),
            "evaporator": frame.groupby("device_id")["temp_evaporator"].mean(),
            "discharge": frame.groupby("device_id")["temp_discharge"].mean(),
            "duty": on.groupby(frame["device_id"]).mean(),
            "vibration": frame[on].groupby("device_id")["vibration_compressor"].mean(),
            "vibration_spread": frame[on].groupby("device_id")["vibration_compressor"].std(),
        }
    )


def test_a_refrigerant_leak_starves_the_evaporator_and_runs_the_compressor_longer():
    degraded, healthy, _ = last_half_day(REFRIGERANT_LEAK, 10)
    sick, well = per_device(degraded), per_device(healthy)
    assert (sick["suction"] < 0.85 * well["suction"]).all()
    assert (sick["ratio"] > 1.1 * well["ratio"]).all()
    assert (sick["evaporator"] > well["evaporator"] + 2).all()
    assert (sick["discharge"] > well["discharge"] + 4).all()
    assert (sick["duty"] > well["duty"] + 0.1).all()


def test_bearing_wear_raises_vibration_and_its_spread_and_leaves_the_refrigerant_side_alone():
    degraded, healthy, _ = last_half_day(BEARING_WEAR, 14)
    sick, well = per_device(degraded), per_device(healthy)
    assert (sick["vibration"] > 1.5 * well["vibration"]).all()
    assert (sick["vibration_spread"] > 2 * well["vibration_spread"]).all()
    for sensor in ("temp_evaporator", "pressure_low", "pressure_high", "temp_condenser"):
        assert np.array_equal(degraded[sensor].to_numpy(), healthy[sensor].to_numpy())


def test_a_drifting_sensor_moves_only_that_sensor():
    degraded, healthy, truth = last_half_day(SENSOR_DRIFT, 12)
    for row in truth.itertuples():
        sick, well = degraded[degraded["device_id"] == row.device_id], healthy[healthy["device_id"] == row.device_id]
        for sensor in fleet.SENSOR_NAMES:
            moved = not np.array_equal(sick[sensor].to_numpy(), well[sensor].to_numpy())
            assert moved == (sensor == row.sensor), (row.device_id, sensor)
        error = (sick[row.sensor].to_numpy() - well[row.sensor].to_numpy()).mean()
        size = fleet.SENSOR_FAULT_SIZE[row.sensor] * (well[row.sensor].abs().mean() if row.sensor in fleet.GAIN_FAULTS else 1.0)
        # Grown to most of its size by the last half day before the service (severity at least 0.7).
        assert abs(error) > 0.4 * size


def test_generate_writes_the_ground_truth_beside_the_landing_zone(tmp_path):
    spec = replace(FleetSpec.clean(devices=6, start=START, days=2, seed=3), leak_share=0.5, sensor_fault_share=0.5)
    fleet.generate(spec, str(tmp_path))
    truth = pd.read_csv(fleet.degradations_csv_path(str(tmp_path)), keep_default_na=False)
    assert list(truth.columns) == ["device_id", "mode", "sensor", "onset", "event_time", "event_type"]
    assert set(truth["mode"]) <= {REFRIGERANT_LEAK, SENSOR_DRIFT} and len(truth) >= 1
    assert not fleet.degradations_csv_path(str(tmp_path)).is_relative_to(tmp_path / "landing")
