"""A simulated refrigeration fleet with real failure modes, deterministic for a seed.

Every device runs an on/off compressor cycle; on top of that some devices drift, some degrade
until the compressor fails (a `failure` maintenance event, then silence until serviced), and
the transport misbehaves: dropouts, duplicate deliveries, conflicting re-sends, files that arrive
late for a past day, out-of-range and non-finite values, and readings from unknown or malformed
device ids. What is written follows the landing-zone contract in `fs_domain.contract`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fs_domain.contract import LANDING_COLUMNS, MAINTENANCE_COLUMNS, REGISTRY_COLUMNS, SENSOR_NAMES
from fs_resources import settings

MINUTES_PER_DAY = 1440
DEVICES_PER_FILE = 500
UNKNOWN_DEVICE_ID = "dev-unregistered-0001"
MALFORMED_DEVICE_IDS = ("dev 0001;drop", "")

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
    on = (cycle < p.duty[:, None]).astype(float)
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
    return values


def _day_rng(spec: FleetSpec, day_index: int, shard: int) -> np.random.Generator:
    # Shard 0 draws the stream a fleet of one shard always drew, so small fleets keep their data.
    return np.random.default_rng([spec.seed, 100 + day_index, 0] + ([shard] if shard else []))


def shard_of(profile: FleetProfile, shard: int) -> FleetProfile:
    """The profile of the devices of landing file `shard` (DEVICES_PER_FILE devices each)."""
    rows = slice(shard * DEVICES_PER_FILE, (shard + 1) * DEVICES_PER_FILE)
    return FleetProfile(**{f.name: getattr(profile, f.name)[rows] for f in fields(FleetProfile)})


def shard_count(profile: FleetProfile) -> int:
    return max(1, -(-len(profile.device_ids) // DEVICES_PER_FILE))


def simulate_day(
    spec: FleetSpec, fleet: FleetProfile, day_index: int, shard: int = 0, minute_range: tuple[int, int] = (0, MINUTES_PER_DAY)
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One day's readings of the fleet's shard `shard` (the devices of one landing file, see
    `shard_of`) as (on-time rows, conflicting re-sends, late rows for this day). Each shard draws
    from its own random stream, so memory stays that of one shard whatever the fleet's size;
    readings from unknown and malformed ids travel with shard 0.

    `minute_range` limits the day to [start, end) minutes after midnight (used by `fs-sim live`).
    """
    rng = _day_rng(spec, day_index, shard)
    profile = shard_of(fleet, shard)
    day = spec.start + timedelta(days=day_index)
    minute_of_day = np.arange(*minute_range)
    minutes = day_index * MINUTES_PER_DAY + minute_of_day
    values = simulate_minutes(profile, np.arange(day_index * MINUTES_PER_DAY, (day_index + 1) * MINUTES_PER_DAY), rng)
    values = {k: v[:, minute_of_day] for k, v in values.items()}
    n, k = len(profile.device_ids), len(minutes)

    present = np.ones((n, k), dtype=bool)
    present &= (profile.status != "retired")[:, None]
    present &= rng.random((n, k)) >= spec.dropout_rate
    # A failed compressor sends nothing until it is serviced six hours later.
    failed = profile.failure_minute >= 0
    silent = (
        failed[:, None] & (minutes[None, :] >= profile.failure_minute[:, None]) & (minutes[None, :] < profile.failure_minute[:, None] + 360)
    )
    present &= ~silent
    # Connectivity outages; some of them are re-delivered later as a late file for this day.
    late = np.zeros((n, k), dtype=bool)
    outage = rng.random(n) < spec.outage_probability
    starts = rng.integers(0, max(k - 30, 1), n)
    lengths = rng.integers(30, 121, n)
    redelivered = rng.random(n) < spec.late_outage_share
    for i in np.flatnonzero(outage):
        block = slice(starts[i], starts[i] + lengths[i])
        if redelivered[i]:
            late[i, block] = present[i, block]
        present[i, block] = False

    for name in SENSOR_NAMES:
        cells = rng.random((n, k))
        values[name][cells < spec.out_of_range_rate] = 9999.0
        bad = (cells >= spec.out_of_range_rate) & (cells < spec.out_of_range_rate + spec.non_finite_rate)
        values[name][bad] = np.where(rng.random(bad.sum()) < 0.5, np.nan, np.inf)

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
        picks = rng.integers(0, k, spec.foreign_rows_per_day)
        for j, ident in enumerate(
            [UNKNOWN_DEVICE_ID] * (spec.foreign_rows_per_day - len(MALFORMED_DEVICE_IDS)) + list(MALFORMED_DEVICE_IDS)
        ):
            row = {"device_id": ident, "ts": ts[picks[j]]}
            row.update({name: 1.0 for name in SENSOR_NAMES})
            foreign.append(row)
    parts = [on_time] + [p for p in (dup, pd.DataFrame(foreign, columns=list(LANDING_COLUMNS))) if len(p)]
    on_time = pd.concat(parts, ignore_index=True)
    on_time = on_time.sort_values(["device_id", "ts"], kind="stable").reset_index(drop=True)
    return on_time[list(LANDING_COLUMNS)], conflicts[list(LANDING_COLUMNS)], late_rows[list(LANDING_COLUMNS)]


def simulate_in_parts(
    spec: FleetSpec, profile: FleetProfile, day_index: int, minute_range: tuple[int, int], max_rows: int
) -> Iterator[pd.DataFrame]:
    """The on-time readings of `minute_range`, shard by shard, in frames of whole shards holding
    about `max_rows` readings (one shard may exceed it)."""
    pending: list[pd.DataFrame] = []
    for b in range(shard_count(profile)):
        on_time, _, _ = simulate_day(spec, profile, day_index, b, minute_range)
        pending.append(on_time)
        if sum(len(f) for f in pending) >= max_rows:
            yield pd.concat(pending, ignore_index=True)
            pending = []
    if pending:
        yield pd.concat(pending, ignore_index=True)


def maintenance_frame(profile: FleetProfile, spec: FleetSpec) -> pd.DataFrame:
    start = pd.Timestamp(spec.start, tz="UTC")
    events = []
    for i in np.flatnonzero(profile.failure_minute >= 0):
        at = start + pd.Timedelta(minutes=int(profile.failure_minute[i]))
        events.append((profile.device_ids[i], at, "failure", "compressor", "compressor tripped on overload"))
        events.append((profile.device_ids[i], at + pd.Timedelta(hours=6), "service", "compressor", "compressor replaced"))
    frame = pd.DataFrame(events, columns=list(MAINTENANCE_COLUMNS))
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return frame


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


def generate(spec: FleetSpec, root: str, progress: Callable[[Iterator[int]], Iterator[int]] = iter) -> dict[str, int]:
    """Write the registry, maintenance events and `spec.days` days of landing files under `root`."""
    profile = build_profile(spec)
    write_registry(registry_frame(profile, spec), root)
    write_maintenance(maintenance_frame(profile, spec), root)
    totals = {"files": 0, "rows": 0, "late_files": 0}
    pending_late: pd.DataFrame | None = None
    for day_index in progress(range(spec.days)):
        day = spec.start + timedelta(days=day_index)
        folder = landing_dir(root, day)
        resent, delayed = [], []
        for b in range(shard_count(profile)):
            part, conflicts, late = simulate_day(spec, profile, day_index, b)
            write_parquet(part, folder / f"part-{b:04d}.parquet")
            totals["files"] += 1
            totals["rows"] += len(part)
            resent.append(conflicts)
            delayed.append(late)
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
