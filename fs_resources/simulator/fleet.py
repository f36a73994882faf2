"""A simulated refrigeration fleet with real failure modes, deterministic for a seed.

Every device runs an on/off compressor cycle; on top of that some devices drift, some degrade
until the compressor fails (a `failure` maintenance event, then silence until serviced), and
the transport misbehaves: dropouts, duplicate deliveries, conflicting re-sends, files that arrive
late for a past day, out-of-range and non-finite values, and readings from unknown or malformed
device ids. What is written follows the landing-zone contract in `fs_domain.contract`.

Opt-in degradations (`FleetSpec` fields that default to none, so a fleet without them is the
fleet it always was), each on its own devices, with a known onset and the event that ends it
(`degradation_frame`, written beside the landing zone by `generate`). Each grows from nothing at
its onset to its full size at its event; the physics is the textbook picture of each fault:

- Refrigerant leak (`leak_share`, over 3-8 days, ending in a `failure`: the low-pressure cut-out
  trips). As charge is lost, suction pressure falls (the evaporator is starved), the high side
  falls less, so the pressure ratio rises; the evaporator cannot reach its setpoint and warms; the
  vapour reaches the compressor superheated, so the discharge runs hotter; the compressor runs
  longer to hold the load (duty cycle towards continuous) while drawing a little less current
  (less mass flow). A receiver masks the first losses, so the effects grow with the square of the
  time since onset.
- Bearing wear (`bearing_wear_share`, over 5-12 days, ending in a `failure`: the compressor
  seizes). While the compressor runs, its vibration level rises and its minute-to-minute spread
  widens faster still (a worn bearing rattles); friction adds a little current and heat. Wear
  accelerates, so again the square of the time since onset.
- Sensor drift (`sensor_fault_share`, over 4-10 days, ending in a `service` event: the sensor is
  recalibrated; no failure). One sensor's calibration error grows linearly from 0: an offset for
  temperatures and pressures, a gain error for the current clamp and the vibration pickup. The
  machine itself stays healthy.

Onsets fall after `degradation_onset_after_day`. `site_weather_sd` adds what healthy fleets do
day to day: each site's ambient temperature wanders (a slow random walk across days), moving the
condenser, discharge and high-side pressure and the duty cycle together.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fs_domain.contract import EXPECTED_GAP_COLUMNS, LANDING_COLUMNS, MAINTENANCE_COLUMNS, REGISTRY_COLUMNS, SENSOR_NAMES, GapReason
from fs_resources import settings

MINUTES_PER_DAY = 1440
DEVICES_PER_FILE = 500
UNKNOWN_DEVICE_ID = "dev-unregistered-0001"
MALFORMED_DEVICE_IDS = ("dev 0001;drop", "")

# Degradations a device can carry besides the compressor overload of `degrading_share`: code 1, 2, 3.
REFRIGERANT_LEAK, BEARING_WEAR, SENSOR_DRIFT = "refrigerant_leak", "bearing_wear", "sensor_drift"
DEGRADATION_MODES = (REFRIGERANT_LEAK, BEARING_WEAR, SENSOR_DRIFT)
# The compressor overload of `degrading_share`, as the ground truth names it.
COMPRESSOR_OVERLOAD = "compressor_overload"
# Days from onset to event, per mode (uniform between the bounds).
DEGRADATION_DAYS = {REFRIGERANT_LEAK: (3.0, 8.0), BEARING_WEAR: (5.0, 12.0), SENSOR_DRIFT: (4.0, 10.0)}
# A drifting sensor's calibration error when it is serviced: an offset in the sensor's unit, or
# (current, vibration) a gain error; scaled per device by a severity in [0.7, 1.3].
SENSOR_FAULT_SIZE = {
    "temp_evaporator": 4.0,
    "temp_condenser": 4.0,
    "temp_discharge": 6.0,
    "current_compressor": 0.25,
    "pressure_high": 1.5,
    "pressure_low": 0.4,
    "vibration_compressor": 0.4,
}
GAIN_FAULTS = ("current_compressor", "vibration_compressor")
DEVICES_PER_SITE = 25
# How much of a day's ambient swing carries into the next (a weather front lasts days).
WEATHER_PERSISTENCE = 0.8

MODELS = ("CoolMax 300", "CoolMax 500", "FrostLine F2", "FrostLine F4")
REFRIGERANTS = ("R404A", "R134a", "R290", "R744")


@dataclass(frozen=True)
class FleetSpec:
    devices: int
    start: date
    days: int
    seed: int = 7
    # Rates of the failure modes; tests turn them off to get exact expectations.
    dropout_rate: float = 0.01
    duplicate_rate: float = 0.003
    conflict_rate: float = 0.0003
    out_of_range_rate: float = 0.0005
    non_finite_rate: float = 0.0002
    outage_probability: float = 0.05
    late_outage_share: float = 0.3
    degrading_share: float = 0.02
    drifting_share: float = 0.05
    retired_share: float = 0.02
    foreign_rows_per_day: int = 30
    # Opt-in degradations with a known onset (see the module docstring); 0 leaves the fleet as it was.
    leak_share: float = 0.0
    bearing_wear_share: float = 0.0
    sensor_fault_share: float = 0.0
    degradation_onset_after_day: float = 0.0
    # Standard deviation (°C) of each site's day-to-day ambient swing; 0: every day alike.
    site_weather_sd: float = 0.0

    @classmethod
    def clean(cls, devices: int, start: date, days: int, seed: int = 7) -> FleetSpec:
        """A fleet whose transport never misbehaves (every reading arrives once, in range)."""
        return cls(
            devices,
            start,
            days,
            seed,
            dropout_rate=0,
            duplicate_rate=0,
            conflict_rate=0,
            out_of_range_rate=0,
            non_finite_rate=0,
            outage_probability=0,
            late_outage_share=0,
            degrading_share=0,
            drifting_share=0,
            retired_share=0,
            foreign_rows_per_day=0,
        )


@dataclass(frozen=True)
class FleetProfile:
    """Per-device constants, drawn once from the seed."""

    device_ids: np.ndarray
    status: np.ndarray
    period: np.ndarray
    duty: np.ndarray
    phase: np.ndarray
    evap_setpoint: np.ndarray
    cond_base: np.ndarray
    discharge_base: np.ndarray
    current_base: np.ndarray
    p_high_base: np.ndarray
    p_low_base: np.ndarray
    vib_base: np.ndarray
    drift_sensor: np.ndarray  # -1: no drift, else index into SENSOR_NAMES
    drift_per_day: np.ndarray
    failure_minute: np.ndarray  # absolute minute from spec.start; -1: never fails
    # Opt-in degradations: 0 none, else 1 + index into DEGRADATION_MODES; minutes from spec.start.
    degradation: np.ndarray
    onset_minute: np.ndarray  # -1: none
    event_minute: np.ndarray  # the failure (leak, bearing wear) or service (sensor drift); -1: none
    fault_sensor: np.ndarray  # sensor drift: index into SENSOR_NAMES, else -1
    severity: np.ndarray  # scales a degradation's size (a drift's sign included)
    ambient: np.ndarray  # devices x (days + 1): the site's ambient offset (°C) at each midnight; no columns without weather


def device_id(i: int) -> str:
    return f"dev-{i:05d}"


def build_profile(spec: FleetSpec) -> FleetProfile:
    rng = np.random.default_rng([spec.seed, 0])
    n = spec.devices
    ids = np.array([device_id(i) for i in range(1, n + 1)], dtype=object)
    status = np.where(rng.random(n) < spec.retired_share, "retired", "active").astype(object)
    freezer = rng.random(n) < 0.5
    drifting = rng.random(n) < spec.drifting_share
    degrading = (rng.random(n) < spec.degrading_share) & (status == "active")
    horizon = spec.days * MINUTES_PER_DAY
    failure_minute = np.where(degrading, rng.integers(int(horizon * 0.5), max(horizon, 2), n), -1)
    return FleetProfile(
        **_degradations(spec, status, failure_minute),
        device_ids=ids,
        status=status,
        period=rng.uniform(20, 40, n),
        duty=rng.uniform(0.35, 0.65, n),
        phase=rng.uniform(0, 40, n),
        evap_setpoint=np.where(freezer, -22.0, 1.0) + rng.normal(0, 1.0, n),
        cond_base=rng.normal(38, 3, n),
        discharge_base=rng.normal(65, 5, n),
        current_base=rng.normal(8, 1.5, n).clip(3, 20),
        p_high_base=rng.normal(15, 1.5, n).clip(8, 25),
        p_low_base=np.where(freezer, 1.5, 3.0) + rng.normal(0, 0.2, n),
        vib_base=rng.normal(2.0, 0.4, n).clip(0.5, 6),
        drift_sensor=np.where(drifting, rng.integers(0, len(SENSOR_NAMES), n), -1),
        drift_per_day=rng.uniform(0.05, 0.3, n),
        failure_minute=failure_minute,
    )


def _degradations(spec: FleetSpec, status: np.ndarray, failure_minute: np.ndarray) -> dict[str, np.ndarray]:
    """The opt-in degradations and weather, drawn from streams of their own so that turning them on
    leaves every other draw of the fleet as it was."""
    n = len(status)
    rng = np.random.default_rng([spec.seed, 2])
    draw, days, sensor = rng.random(n), rng.uniform(0, 1, n), rng.integers(0, len(SENSOR_NAMES), n)
    placement, size, sign = rng.random(n), rng.uniform(0.7, 1.3, n), rng.choice([-1.0, 1.0], n)
    shares = np.cumsum([spec.leak_share, spec.bearing_wear_share, spec.sensor_fault_share])
    eligible = (status == "active") & (failure_minute < 0)
    degradation = np.where(eligible & (draw < shares[-1]), 1 + np.searchsorted(shares, draw, side="right"), 0)
    low = np.array([0.0] + [DEGRADATION_DAYS[m][0] for m in DEGRADATION_MODES])[degradation]
    high = np.array([0.0] + [DEGRADATION_DAYS[m][1] for m in DEGRADATION_MODES])[degradation]
    length = (low + days * (high - low)) * MINUTES_PER_DAY
    # The onset anywhere after `degradation_onset_after_day` that lets the event fall within the
    # fleet's days (at the earliest onset when none does: the event is then still to come).
    first = spec.degradation_onset_after_day * MINUTES_PER_DAY
    latest = np.maximum(spec.days * MINUTES_PER_DAY - length - 1, first)
    onset = np.where(degradation > 0, np.floor(first + placement * (latest - first)), -1).astype(np.int64)
    event = np.where(degradation > 0, onset + np.round(length), -1).astype(np.int64)
    drifting = degradation == 1 + DEGRADATION_MODES.index(SENSOR_DRIFT)
    # Suction pressure drifts upwards only: a negative gauge reading would be refused, not drift.
    low_side = SENSOR_NAMES.index("pressure_low")
    sign = np.where(drifting & (sensor == low_side), 1.0, sign)
    weather = np.zeros((n, 0))
    if spec.site_weather_sd > 0:
        sites = -(-n // DEVICES_PER_SITE)
        steps = np.random.default_rng([spec.seed, 3]).normal(
            0, spec.site_weather_sd * np.sqrt(1 - WEATHER_PERSISTENCE**2), (sites, spec.days + 1)
        )
        walk = np.empty_like(steps)
        walk[:, 0] = steps[:, 0] / np.sqrt(1 - WEATHER_PERSISTENCE**2)
        for d in range(1, spec.days + 1):
            walk[:, d] = WEATHER_PERSISTENCE * walk[:, d - 1] + steps[:, d]
        weather = walk[np.arange(n) // DEVICES_PER_SITE]
    return {
        "degradation": degradation.astype(np.int64),
        "onset_minute": onset,
        "event_minute": event,
        "fault_sensor": np.where(drifting, sensor, -1),
        "severity": np.where(drifting, sign * size, size),
        "ambient": weather,
    }


def _mode(profile: FleetProfile, mode: str) -> np.ndarray:
    return profile.degradation == 1 + DEGRADATION_MODES.index(mode)


def _failure_minutes(profile: FleetProfile) -> np.ndarray:
    """When each device's compressor stops: the overload's failure or a leak's or worn bearing's; -1: never."""
    ends_in_failure = _mode(profile, REFRIGERANT_LEAK) | _mode(profile, BEARING_WEAR)
    return np.where(ends_in_failure, profile.event_minute, profile.failure_minute)


def registry_frame(profile: FleetProfile, spec: FleetSpec) -> pd.DataFrame:
    rng = np.random.default_rng([spec.seed, 1])
    n = len(profile.device_ids)
    install = [spec.start - timedelta(days=int(d)) for d in rng.integers(30, 3000, n)]
    frame = pd.DataFrame(
        {
            "device_id": profile.device_ids,
            "site_id": [f"site-{1 + i // 25:04d}" for i in range(n)],
            "model": rng.choice(MODELS, n),
            "refrigerant": rng.choice(REFRIGERANTS, n),
            "install_date": [d.isoformat() for d in install],
            "status": profile.status,
        }
    )
    return frame[list(REGISTRY_COLUMNS)]


def simulate_minutes(profile: FleetProfile, minutes: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Sensor values for every device at absolute minutes `minutes` (shape devices x minutes)."""
    m = minutes[None, :].astype(float)
    p = profile
    n, k = len(p.device_ids), len(minutes)
    cycle = ((m + p.phase[:, None]) % p.period[:, None]) / p.period[:, None]
    ambient = _ambient(p, m)
    leak = _growth(p, m, REFRIGERANT_LEAK)
    if leak is not None:
        leak = leak**2
    duty = p.duty[:, None]
    if ambient is not None:
        # A hotter day keeps the compressor on longer for the same load.
        duty = (duty + 0.012 * ambient).clip(0.1, 0.97)
    if leak is not None:
        duty = duty + (0.97 - duty) * leak
    on = (cycle < duty).astype(float)
    daily = np.sin(2 * np.pi * (m % MINUTES_PER_DAY) / MINUTES_PER_DAY)

    def noise(scale: float) -> np.ndarray:
        return rng.normal(0, scale, (n, k))

    values = {
        "temp_evaporator": p.evap_setpoint[:, None] + 1.5 * np.cos(2 * np.pi * cycle) + noise(0.2),
        "temp_condenser": p.cond_base[:, None] + 5 * on + 3 * daily + noise(0.4),
        "temp_discharge": p.discharge_base[:, None] + 15 * on + noise(0.8),
        "current_compressor": on * (p.current_base[:, None] + noise(0.25)) + (1 - on) * (0.1 + noise(0.01)).clip(0),
        "pressure_high": p.p_high_base[:, None] + 2 * on + noise(0.15),
        "pressure_low": (p.p_low_base[:, None] - 0.4 * on + noise(0.05)).clip(0.05),
        "vibration_compressor": on * (p.vib_base[:, None] + noise(0.15)).clip(0.05) + (1 - on) * 0.2,
    }
    # Slow sensor drift: a calibration error that grows by the day.
    for s, name in enumerate(SENSOR_NAMES):
        rows = p.drift_sensor == s
        if rows.any():
            values[name][rows] += p.drift_per_day[rows, None] * (m / MINUTES_PER_DAY)
    # Compressor degradation over the three days before a failure.
    failing = p.failure_minute >= 0
    if failing.any():
        ramp = ((m - (p.failure_minute[:, None] - 3 * MINUTES_PER_DAY)) / (3 * MINUTES_PER_DAY)).clip(0, 1)
        ramp = np.where(failing[:, None], ramp, 0.0)
        values["current_compressor"] += 3 * ramp * on
        values["vibration_compressor"] *= 1 + 2 * ramp
        values["temp_discharge"] += 12 * ramp
    if ambient is not None:
        values["temp_condenser"] += ambient
        values["temp_discharge"] += ambient
        values["pressure_high"] += 0.3 * ambient
        values["current_compressor"] += 0.04 * ambient * on
        values["temp_evaporator"] += 0.05 * ambient
    if leak is not None:
        size = p.severity[:, None] * leak
        values["pressure_low"] *= 1 - 0.45 * size.clip(0, 1)
        values["pressure_high"] -= 2.5 * size
        values["temp_evaporator"] += 8 * size
        values["temp_discharge"] += 15 * size
        values["temp_condenser"] -= 2 * size
        values["current_compressor"] *= 1 - 0.1 * size * on
    wear = _growth(p, m, BEARING_WEAR)
    if wear is not None:
        size = p.severity[:, None] * wear**2
        level = p.vib_base[:, None]
        worn = level * (1 + 2 * size) + (values["vibration_compressor"] - level) * (1 + 5 * size)
        values["vibration_compressor"] = np.where((on > 0) & (size > 0), worn.clip(0.05), values["vibration_compressor"])
        values["current_compressor"] += 0.6 * size * on
        values["temp_discharge"] += 4 * size * on
    calibration = _growth(p, m, SENSOR_DRIFT)
    if calibration is not None:
        for s, name in enumerate(SENSOR_NAMES):
            rows = p.fault_sensor == s
            if not rows.any():
                continue
            error = SENSOR_FAULT_SIZE[name] * p.severity[rows, None] * calibration[rows]
            if name in GAIN_FAULTS:
                values[name][rows] *= 1 + error
            else:
                values[name][rows] += error
    return values


def _growth(profile: FleetProfile, m: np.ndarray, mode: str) -> np.ndarray | None:
    """Devices x minutes: how far each device's degradation of `mode` has grown, from 0 at its onset
    to 1 at its event (0 outside); None when no device has it."""
    rows = _mode(profile, mode)
    if not rows.any():
        return None
    onset, event = profile.onset_minute[:, None].astype(float), profile.event_minute[:, None].astype(float)
    grown = ((m - onset) / np.maximum(event - onset, 1)).clip(0, 1)
    return np.where(rows[:, None] & (m >= onset) & (m < event), grown, 0.0)


def _ambient(profile: FleetProfile, m: np.ndarray) -> np.ndarray | None:
    """Devices x minutes: the site's ambient offset, interpolated between midnights; None without weather."""
    if profile.ambient.shape[1] == 0:
        return None
    last = profile.ambient.shape[1] - 1
    at = (m[0] / MINUTES_PER_DAY).clip(0, last)
    day = np.minimum(at.astype(np.int64), max(last - 1, 0))
    after = np.minimum(day + 1, last)
    return profile.ambient[:, day] + (profile.ambient[:, after] - profile.ambient[:, day]) * (at - day)


def _day_rng(spec: FleetSpec, day_index: int, shard: int) -> np.random.Generator:
    # Shard 0 draws the stream a fleet of one shard always drew, so small fleets keep their data.
    return np.random.default_rng([spec.seed, 100 + day_index, 0] + ([shard] if shard else []))


def shard_of(profile: FleetProfile, shard: int) -> FleetProfile:
    """The profile of the devices of landing file `shard` (DEVICES_PER_FILE devices each)."""
    rows = slice(shard * DEVICES_PER_FILE, (shard + 1) * DEVICES_PER_FILE)
    return FleetProfile(**{f.name: getattr(profile, f.name)[rows] for f in fields(FleetProfile)})


def shard_count(profile: FleetProfile) -> int:
    return max(1, -(-len(profile.device_ids) // DEVICES_PER_FILE))


@dataclass(frozen=True)
class SimulatedDay:
    """One shard's readings of a day (or part of it) and the silences it declares in advance."""

    on_time: pd.DataFrame
    conflicts: pd.DataFrame  # conflicting re-sends
    late: pd.DataFrame  # rows of this day delivered the next day
    gaps: pd.DataFrame  # EXPECTED_GAP_COLUMNS: the day's planned outages and compressor silences, whole


def simulate_day(
    spec: FleetSpec, fleet: FleetProfile, day_index: int, shard: int = 0, minute_range: tuple[int, int] = (0, MINUTES_PER_DAY)
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One day's readings of the fleet's shard `shard` as (on-time rows, conflicting re-sends, late rows for this day)."""
    day = simulate_day_with_gaps(spec, fleet, day_index, shard, minute_range)
    return day.on_time, day.conflicts, day.late


def simulate_day_with_gaps(
    spec: FleetSpec, fleet: FleetProfile, day_index: int, shard: int = 0, minute_range: tuple[int, int] = (0, MINUTES_PER_DAY)
) -> SimulatedDay:
    """One day's readings of the fleet's shard `shard` (the devices of one landing file, see
    `shard_of`), and the gaps it declares. Each shard draws from its own random stream, so memory
    stays that of one shard whatever the fleet's size; readings from unknown and malformed ids travel
    with shard 0.

    `minute_range` limits the day to [start, end) minutes after midnight (used by `fs-sim live`).
    Dropouts and outages are drawn for the whole day, then cut to the range, so a day written in
    parts has the outages of the day written whole, the ones its declared gaps name.
    """
    rng = _day_rng(spec, day_index, shard)
    profile = shard_of(fleet, shard)
    day = spec.start + timedelta(days=day_index)
    minute_of_day = np.arange(*minute_range)
    values = simulate_minutes(profile, np.arange(day_index * MINUTES_PER_DAY, (day_index + 1) * MINUTES_PER_DAY), rng)
    values = {k: v[:, minute_of_day] for k, v in values.items()}
    n = len(profile.device_ids)

    present = np.ones((n, MINUTES_PER_DAY), dtype=bool)
    present &= (profile.status != "retired")[:, None]
    present &= rng.random((n, MINUTES_PER_DAY)) >= spec.dropout_rate
    silent = _compressor_silence(profile, day_index)
    present &= ~silent
    # Connectivity outages; some of them are re-delivered later as a late file for this day.
    late = np.zeros((n, MINUTES_PER_DAY), dtype=bool)
    outage = rng.random(n) < spec.outage_probability
    starts = rng.integers(0, MINUTES_PER_DAY - 30, n)
    lengths = rng.integers(30, 121, n)
    redelivered = rng.random(n) < spec.late_outage_share
    for i in np.flatnonzero(outage):
        block = slice(starts[i], starts[i] + lengths[i])
        if redelivered[i]:
            late[i, block] = present[i, block]
        present[i, block] = False
    gaps = _declared_gaps(profile, day, silent, outage, starts, lengths)
    present, late = present[:, minute_of_day], late[:, minute_of_day]

    for name in SENSOR_NAMES:
        # Drawn for the whole day too: a part of it drawn alone would repeat the same faulty cells
        # in every part, a sensor reading 9999 all day from the first minute `live` wrote.
        cells = rng.random((n, MINUTES_PER_DAY))
        bad = (cells >= spec.out_of_range_rate) & (cells < spec.out_of_range_rate + spec.non_finite_rate)
        non_finite = np.zeros((n, MINUTES_PER_DAY))
        non_finite[bad] = np.where(rng.random(bad.sum()) < 0.5, np.nan, np.inf)
        cells, bad, non_finite = cells[:, minute_of_day], bad[:, minute_of_day], non_finite[:, minute_of_day]
        values[name][cells < spec.out_of_range_rate] = 9999.0
        values[name][bad] = non_finite[bad]

    ts = pd.Timestamp(day, tz="UTC") + pd.to_timedelta(minute_of_day, unit="min")

    def rows(mask: np.ndarray) -> pd.DataFrame:
        dev_idx, min_idx = np.nonzero(mask)
        frame = pd.DataFrame({"device_id": profile.device_ids[dev_idx], "ts": ts[min_idx]})
        for name in SENSOR_NAMES:
            frame[name] = values[name][dev_idx, min_idx]
        return frame

    on_time = rows(present)
    late_rows = rows(late)

    dup = on_time.sample(frac=spec.duplicate_rate, random_state=int(rng.integers(2**31))) if spec.duplicate_rate else on_time.iloc[:0]
    conflicts = on_time.sample(frac=spec.conflict_rate, random_state=int(rng.integers(2**31))) if spec.conflict_rate else on_time.iloc[:0]
    conflicts = conflicts.assign(temp_condenser=conflicts["temp_condenser"] + 0.5)

    foreign = []
    if spec.foreign_rows_per_day and shard == 0:
        # The day's foreign readings at minutes drawn over the whole day: those in the range are written.
        picks = rng.integers(0, MINUTES_PER_DAY, spec.foreign_rows_per_day)
        midnight = pd.Timestamp(day, tz="UTC")
        for j, ident in enumerate(
            [UNKNOWN_DEVICE_ID] * (spec.foreign_rows_per_day - len(MALFORMED_DEVICE_IDS)) + list(MALFORMED_DEVICE_IDS)
        ):
            if not minute_range[0] <= picks[j] < minute_range[1]:
                continue
            row = {"device_id": ident, "ts": midnight + pd.Timedelta(minutes=int(picks[j]))}
            row.update({name: 1.0 for name in SENSOR_NAMES})
            foreign.append(row)
    parts = [on_time] + [p for p in (dup, pd.DataFrame(foreign, columns=list(LANDING_COLUMNS))) if len(p)]
    on_time = pd.concat(parts, ignore_index=True)
    on_time = on_time.sort_values(["device_id", "ts"], kind="stable").reset_index(drop=True)
    columns = list(LANDING_COLUMNS)
    return SimulatedDay(on_time[columns], conflicts[columns], late_rows[columns], gaps)


def _compressor_silence(profile: FleetProfile, day_index: int) -> np.ndarray:
    """Devices x minutes of the day: a failed compressor sends nothing until it is serviced six hours later."""
    minutes = day_index * MINUTES_PER_DAY + np.arange(MINUTES_PER_DAY)
    failure_minute = _failure_minutes(profile)
    failed = failure_minute >= 0
    after = minutes[None, :] >= failure_minute[:, None]
    return failed[:, None] & after & (minutes[None, :] < failure_minute[:, None] + 360)


def _declared_gaps(
    profile: FleetProfile, day: date, silent: np.ndarray, outage: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> pd.DataFrame:
    """The day's outages and compressor silences as expected-gap rows (retired units are the registry's to declare)."""
    midnight = pd.Timestamp(day, tz="UTC")
    active = profile.status != "retired"
    rows = []
    for i in np.flatnonzero(outage & active):
        end = min(int(starts[i] + lengths[i]), MINUTES_PER_DAY)
        rows.append((profile.device_ids[i], int(starts[i]), end, GapReason.OUTAGE))
    for i in np.flatnonzero(silent.any(axis=1) & active):
        minutes = np.flatnonzero(silent[i])
        rows.append((profile.device_ids[i], int(minutes[0]), int(minutes[-1]) + 1, GapReason.COMPRESSOR_SILENCE))
    frame = pd.DataFrame(rows, columns=["device_id", "start", "end", "reason"])

    def stamp(minute: pd.Series) -> pd.Series:
        return (midnight + pd.to_timedelta(minute, unit="min")).dt.strftime("%Y-%m-%dT%H:%M:%SZ")

    gaps = frame.assign(gap_start=stamp(frame["start"]), gap_end=stamp(frame["end"]))
    return gaps[list(EXPECTED_GAP_COLUMNS)]


def simulate_in_parts(
    spec: FleetSpec, profile: FleetProfile, day_index: int, minute_range: tuple[int, int], max_rows: int
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """The on-time readings of `minute_range`, shard by shard, in frames of whole shards holding
    about `max_rows` readings (one shard may exceed it), each with the gaps its shards declare for the day."""
    pending: list[SimulatedDay] = []
    for b in range(shard_count(profile)):
        pending.append(simulate_day_with_gaps(spec, profile, day_index, b, minute_range))
        if sum(len(d.on_time) for d in pending) >= max_rows:
            yield _joined(pending)
            pending = []
    if pending:
        yield _joined(pending)


def _joined(parts: list[SimulatedDay]) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.concat([d.on_time for d in parts], ignore_index=True), pd.concat([d.gaps for d in parts], ignore_index=True)


def maintenance_frame(profile: FleetProfile, spec: FleetSpec, since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
    """The fleet's failure and service events, those in [since, until) when given: an event is
    written once it has happened, not ahead of the readings that show it."""
    start = pd.Timestamp(spec.start, tz="UTC")
    events = []
    for i in np.flatnonzero(profile.failure_minute >= 0):
        at = start + pd.Timedelta(minutes=int(profile.failure_minute[i]))
        events.append((profile.device_ids[i], at, "failure", "compressor", "compressor tripped on overload"))
        events.append((profile.device_ids[i], at + pd.Timedelta(hours=6), "service", "compressor", "compressor replaced"))
    for i in np.flatnonzero(profile.degradation > 0):
        at = start + pd.Timedelta(minutes=int(profile.event_minute[i]))
        mode = DEGRADATION_MODES[profile.degradation[i] - 1]
        if mode == REFRIGERANT_LEAK:
            events.append((profile.device_ids[i], at, "failure", "refrigerant circuit", "low-pressure cut-out: refrigerant charge lost"))
            events.append(
                (profile.device_ids[i], at + pd.Timedelta(hours=6), "service", "refrigerant circuit", "leak repaired, circuit recharged")
            )
        elif mode == BEARING_WEAR:
            events.append((profile.device_ids[i], at, "failure", "compressor", "compressor seized: bearing failure"))
            events.append((profile.device_ids[i], at + pd.Timedelta(hours=6), "service", "compressor", "compressor replaced"))
        else:
            sensor = SENSOR_NAMES[profile.fault_sensor[i]]
            events.append((profile.device_ids[i], at, "service", sensor, f"{sensor} sensor recalibrated"))
    events = [e for e in events if (since is None or e[1] >= since) and (until is None or e[1] < until)]
    frame = pd.DataFrame(events, columns=list(MAINTENANCE_COLUMNS))
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return frame


def degradation_frame(profile: FleetProfile, spec: FleetSpec) -> pd.DataFrame:
    """The ground truth of the fleet's degradations, one row per degrading device: `mode`, the
    `sensor` a drift affects, its `onset`, and the `event_time` and `event_type` that end it
    (the overload of `degrading_share` starts three days before its failure)."""
    start = pd.Timestamp(spec.start, tz="UTC")
    rows = []
    for i in np.flatnonzero(profile.failure_minute >= 0):
        failure = int(profile.failure_minute[i])
        rows.append((profile.device_ids[i], COMPRESSOR_OVERLOAD, "", failure - 3 * MINUTES_PER_DAY, failure, "failure"))
    for i in np.flatnonzero(profile.degradation > 0):
        mode = DEGRADATION_MODES[profile.degradation[i] - 1]
        sensor = SENSOR_NAMES[profile.fault_sensor[i]] if mode == SENSOR_DRIFT else ""
        event_type = "service" if mode == SENSOR_DRIFT else "failure"
        rows.append((profile.device_ids[i], mode, sensor, int(profile.onset_minute[i]), int(profile.event_minute[i]), event_type))
    frame = pd.DataFrame(rows, columns=["device_id", "mode", "sensor", "onset", "event_time", "event_type"])
    for column in ("onset", "event_time"):
        frame[column] = (start + pd.to_timedelta(frame[column].astype("int64"), unit="min")).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return frame.sort_values("device_id", ignore_index=True)


def degradations_csv_path(root: str) -> Path:
    """Where `generate` writes the ground truth: beside the landing zone, never read as an input."""
    return Path(root) / "simulator" / "degradations.csv"


def landing_dir(root: str, day: date) -> Path:
    return Path(settings.landing_root(root)) / f"date={day.isoformat()}"


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write readings with microsecond UTC timestamps (Spark 4.2 refuses nanosecond Parquet)."""
    schema = pa.schema([("device_id", pa.string()), ("ts", pa.timestamp("us", tz="UTC"))] + [(s, pa.float64()) for s in SENSOR_NAMES])
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    # Readers list the folder: a file appears whole or not at all.
    tmp.replace(path)


def write_registry(frame: pd.DataFrame, root: str) -> Path:
    """Write (or merge into) the registry CSV; a device id already present keeps its new row."""
    path = Path(settings.registry_csv_path(root))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        old = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame = pd.concat([old[~old["device_id"].isin(frame["device_id"])], frame], ignore_index=True)
    frame = frame.sort_values("device_id").reset_index(drop=True)
    frame.to_csv(path, index=False)
    return path


def write_maintenance(frame: pd.DataFrame, root: str) -> Path:
    path = Path(settings.maintenance_csv_path(root))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        old = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame = pd.concat([old, frame.astype(str)], ignore_index=True).drop_duplicates()
    frame.sort_values(["device_id", "event_time"]).to_csv(path, index=False)
    return path


def write_expected_gaps(gaps: pd.DataFrame, root: str, day: date) -> Path | None:
    """Declare `gaps` for `day` (merged into what is declared already); nothing is written for none."""
    if gaps.empty:
        return None
    path = Path(settings.expected_gaps_csv_path(day.isoformat(), root))
    if path.exists():
        gaps = pd.concat([pd.read_csv(path, dtype=str, keep_default_na=False), gaps.astype(str)], ignore_index=True).drop_duplicates()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    gaps.sort_values(["device_id", "gap_start"]).to_csv(tmp, index=False)
    # A reader sees the previous declaration or this one, never half of it.
    tmp.replace(path)
    return path


def generate(
    spec: FleetSpec, root: str, progress: Callable[[Iterator[int]], Iterator[int]] = iter, until: datetime | None = None
) -> dict[str, int]:
    """Write the registry, maintenance events and `spec.days` days of landing files under `root`.

    With `until`, readings and events stop there (exclusive): its day is written in part, in files
    named as `fs-sim live` names its own (`live_file_name`), so live continues where this ended."""
    profile = build_profile(spec)
    write_registry(registry_frame(profile, spec), root)
    write_maintenance(maintenance_frame(profile, spec, until=until), root)
    if (profile.degradation > 0).any():
        path = degradations_csv_path(root)
        path.parent.mkdir(parents=True, exist_ok=True)
        degradation_frame(profile, spec).to_csv(path, index=False)
    totals = {"files": 0, "rows": 0, "late_files": 0}
    pending_late: pd.DataFrame | None = None
    for day_index in progress(range(spec.days)):
        day = spec.start + timedelta(days=day_index)
        end = MINUTES_PER_DAY if until is None else _minutes_into(day, until)
        if end <= 0:
            break
        folder = landing_dir(root, day)
        resent, delayed, gaps = [], [], []
        for b in range(shard_count(profile)):
            simulated = simulate_day_with_gaps(spec, profile, day_index, b, (0, end))
            name = f"part-{b:04d}.parquet" if end == MINUTES_PER_DAY else live_file_name(0, end, b if shard_count(profile) > 1 else None)
            write_parquet(simulated.on_time, folder / name)
            totals["files"] += 1
            totals["rows"] += len(simulated.on_time)
            resent.append(simulated.conflicts)
            delayed.append(simulated.late)
            gaps.append(simulated.gaps)
        write_expected_gaps(pd.concat(gaps, ignore_index=True), root, day)
        conflicts, late = pd.concat(resent, ignore_index=True), pd.concat(delayed, ignore_index=True)
        if len(conflicts):
            write_parquet(conflicts, folder / "resend-0000.parquet")
            totals["files"] += 1
            totals["rows"] += len(conflicts)
        # Outage backlogs of the previous day arrive during this day, as a file for that day.
        if pending_late is not None and len(pending_late):
            write_parquet(pending_late, landing_dir(root, day - timedelta(days=1)) / f"late-{day.isoformat()}.parquet")
            totals["late_files"] += 1
            totals["rows"] += len(pending_late)
        pending_late = late
    return totals


def seed_digest(root: str) -> str:
    """A digest of the landing zone's contents (names and bytes), to show a seed is deterministic."""
    digest = hashlib.sha256()
    for path in sorted(Path(settings.landing_root(root)).rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def utc_now() -> datetime:
    return datetime.now(UTC)


# Keeping a fleet live: `fs-sim live` continues the landing zone where its readings end, as the fleet
# `fs-sim generate` (or an earlier `live`) started, so a seed and the live readings after it form one
# history: no minute twice, none missing, drift and failures where the seed left them.

# The fleet a landing zone holds, under the landing root; a dot-name, which the landing reader never lists.
FLEET_FILE = ".simulated-fleet.json"
# `live-HHMM-HHMM[-part].parquet`: readings of minutes [start, end) of the folder's day, which is
# how `live` finds where the readings end without a state of its own.
LIVE_FILE = re.compile(r"^live-(\d{2})(\d{2})-(\d{2})(\d{2})(?:-\d{4})?\.parquet$")


def live_file_name(start_minute: int, end_minute: int, part: int | None = None) -> str:
    def hhmm(minute: int) -> str:
        return f"{minute // 60:02d}{minute % 60:02d}"

    return f"live-{hhmm(start_minute)}-{hhmm(end_minute)}" + (f"-{part:04d}" if part is not None else "") + ".parquet"


def _minutes_into(day: date, at: datetime) -> int:
    """Whole minutes of `day` before `at`, between 0 and a full day."""
    seconds = (at - datetime(day.year, day.month, day.day, tzinfo=UTC)).total_seconds()
    return int(min(max(seconds // 60, 0), MINUTES_PER_DAY))


def save_fleet(spec: FleetSpec, root: str) -> Path:
    path = Path(settings.landing_root(root)) / FLEET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fields_ = {f.name: getattr(spec, f.name) for f in fields(FleetSpec)}
    path.write_text(json.dumps(fields_ | {"start": spec.start.isoformat()}, indent=2) + "\n")
    return path


def load_fleet(root: str) -> FleetSpec | None:
    """The fleet the landing zone holds, or None when no simulator wrote one."""
    path = Path(settings.landing_root(root)) / FLEET_FILE
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return FleetSpec(**(data | {"start": date.fromisoformat(data["start"])}))


def simulated_until(root: str) -> datetime | None:
    """Where the simulator's readings end (exclusive): the end of the latest day holding its files,
    a whole day for `part-` files, else the latest `live-` file's end. None when it wrote none."""
    landing = Path(settings.landing_root(root))
    days = sorted((p for p in landing.glob("date=*") if p.is_dir()), reverse=True) if landing.exists() else []
    for folder in days:
        try:
            day = date.fromisoformat(folder.name.removeprefix("date="))
        except ValueError:
            continue
        names = [p.name for p in folder.iterdir()]
        ends = [MINUTES_PER_DAY for name in names if name.startswith("part-") and name.endswith(".parquet")]
        ends += [int(m[3]) * 60 + int(m[4]) for m in map(LIVE_FILE.match, names) if m]
        if ends:
            return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(minutes=max(ends))
    return None


def day_ranges(since: datetime, until: datetime) -> Iterator[tuple[date, int, int]]:
    """[since, until) cut at midnights: (day, first minute, end minute) of each day it touches."""
    day = since.date()
    while datetime(day.year, day.month, day.day, tzinfo=UTC) < until:
        start, end = _minutes_into(day, since), _minutes_into(day, until)
        if end > start:
            yield day, start, end
        day += timedelta(days=1)


@dataclass(frozen=True)
class Drift:
    """A sensor of every unit of a site reading further off by `per_hour` units an hour from `since`."""

    site: str
    sensor: str
    per_hour: float
    since: datetime


@dataclass(frozen=True)
class Faults:
    """What is done to a live fleet from outside: a gateway (a site's link) gone silent, a drifting
    sensor. Unlike the fleet's own outages, nothing declares them: they are incidents."""

    silent_sites: frozenset[str] = frozenset()
    drifts: tuple[Drift, ...] = ()

    def apply(self, frame: pd.DataFrame, sites: pd.Series) -> pd.DataFrame:
        """`frame`'s readings as they arrive under these faults; `sites` maps device id to site id."""
        site = frame["device_id"].map(sites)
        frame = frame[~site.isin(self.silent_sites)].copy()
        site = site[frame.index]
        for drift in self.drifts:
            rows = site == drift.site
            hours = ((frame.loc[rows, "ts"] - pd.Timestamp(drift.since)).dt.total_seconds() / 3600).clip(lower=0)
            frame.loc[rows, drift.sensor] = frame.loc[rows, drift.sensor] + drift.per_hour * hours
        return frame.reset_index(drop=True)


def write_live(
    spec: FleetSpec,
    profile: FleetProfile,
    root: str,
    day: date,
    minute_range: tuple[int, int],
    faults: Faults,
    sites: pd.Series,
    max_rows: int,
) -> tuple[int, int, pd.DataFrame]:
    """Write the fleet's readings of `minute_range` of `day` (a file per about `max_rows` readings) and
    the maintenance events of that span; returns readings and files written, and the day's declared gaps."""
    day_index = (day - spec.start).days
    written = files = 0
    gaps = []
    parts = list(simulate_in_parts(spec, profile, day_index, minute_range, max_rows))
    for i, (part, declared) in enumerate(parts):
        part = faults.apply(part, sites)
        write_parquet(part, landing_dir(root, day) / live_file_name(*minute_range, i if len(parts) > 1 else None))
        written, files = written + len(part), files + 1
        gaps.append(declared)
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    events = maintenance_frame(
        profile, spec, since=midnight + timedelta(minutes=minute_range[0]), until=midnight + timedelta(minutes=minute_range[1])
    )
    if len(events):
        write_maintenance(events, root)
    return written, files, pd.concat(gaps, ignore_index=True)
