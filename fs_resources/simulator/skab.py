"""Map the SKAB pump testbed data (real sensors, 1 Hz) onto the landing-zone contract.

SKAB (Katser and Kozitsin, doi:10.34740/KAGGLE/DSV/1693952) is GPL-3.0: it is read from its own
folder at run time and never copied into this package. Each experiment file becomes one device;
its naive timestamps are local time at the testbed (assumed Europe/Moscow, UTC+3) and are placed
in UTC at their native one-second rate. The `anomaly` label segments become maintenance events.
The mapping is by role (a motor-driven pump is not a compressor): sensors without an analogue
(evaporator temperature, suction pressure) stay NULL rather than being faked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fs_domain.contract import LANDING_COLUMNS, MAINTENANCE_COLUMNS, REGISTRY_COLUMNS, SENSOR_NAMES
from fs_resources.simulator.fleet import landing_dir, write_maintenance, write_parquet, write_registry

SKAB_TIMEZONE = "Europe/Moscow"

# our sensor <- SKAB column (see SOURCE.md beside the data for units and caveats)
COLUMN_MAP = {
    "current_compressor": "Current",
    "vibration_compressor": "Accelerometer1RMS",
    "pressure_high": "Pressure",
    "temp_discharge": "Temperature",
    "temp_condenser": "Thermocouple",
}

FAULT_KINDS = {
    "valve1": "closing the valve at the flow inlet to the pump",
    "valve2": "closing the valve at the outlet of the pump",
    "other": "leak, rotor imbalance, water level or cavitation experiment",
    "anomaly-free": "normal operation",
}


@dataclass(frozen=True)
class SkabImport:
    devices: int
    rows: int
    events: int
    dates: tuple[str, ...]


def skab_files(skab_dir: Path) -> list[Path]:
    if not (skab_dir / "SOURCE.md").exists() and not any(skab_dir.glob("*/*.csv")):
        raise FileNotFoundError(
            f"No SKAB data under {skab_dir}. Get it from the SKAB repository (waico/SKAB, folder data/) "
            "and point FS_SKAB_DIR (or --skab-dir) at the folder holding anomaly-free/, valve1/, valve2/ and other/."
        )
    return sorted(skab_dir.glob("*/*.csv"), key=lambda p: (p.parent.name, int(p.stem) if p.stem.isdigit() else -1))


def skab_device_id(path: Path) -> str:
    group = path.parent.name
    return f"skab-{group}" if group == "anomaly-free" else f"skab-{group}-{int(path.stem):02d}"


def read_experiment(path: Path, tz: str = SKAB_TIMEZONE) -> pd.DataFrame:
    raw = pd.read_csv(path, sep=";")
    local = pd.to_datetime(raw["datetime"], format="%Y-%m-%d %H:%M:%S")
    frame = pd.DataFrame({"device_id": skab_device_id(path), "ts": local.dt.tz_localize(tz).dt.tz_convert("UTC")})
    for ours in SENSOR_NAMES:
        frame[ours] = raw[COLUMN_MAP[ours]].astype(float) if ours in COLUMN_MAP else np.nan
    frame["anomaly"] = raw["anomaly"].astype(float) if "anomaly" in raw else 0.0
    return frame


def label_events(frame: pd.DataFrame, kind: str) -> list[tuple]:
    """`fault_start` at each anomaly segment's first row, `fault_end` at the first row after it."""
    flags = frame["anomaly"].to_numpy() > 0
    edges = np.diff(np.concatenate([[False], flags, [False]]).astype(int))
    events = []
    for start, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        device = frame["device_id"].iat[0]
        events.append((device, frame["ts"].iat[start], "fault_start", "pump", kind))
        if end < len(frame):
            events.append((device, frame["ts"].iat[end], "fault_end", "pump", kind))
    return events


def import_skab(skab_dir: Path, root: str, tz: str = SKAB_TIMEZONE) -> SkabImport:
    """Write every SKAB experiment as landing files, registry rows and maintenance events under `root`."""
    registry, events, dates, rows = [], [], set(), 0
    for path in skab_files(skab_dir):
        frame = read_experiment(path, tz)
        device = frame["device_id"].iat[0]
        kind = FAULT_KINDS.get(path.parent.name, path.parent.name)
        events.extend(label_events(frame, kind))
        for day, part in frame.groupby(frame["ts"].dt.date):
            write_parquet(part[list(LANDING_COLUMNS)], landing_dir(root, day) / f"{device}.parquet")
            dates.add(day.isoformat())
        rows += len(frame)
        first_day = frame["ts"].iat[0].date()
        registry.append((device, "skab-testbed", "SKAB water pump", "none", first_day.isoformat(), "active"))
    write_registry(pd.DataFrame(registry, columns=list(REGISTRY_COLUMNS)), root)
    labels = pd.DataFrame(events, columns=list(MAINTENANCE_COLUMNS))
    labels["event_time"] = pd.to_datetime(labels["event_time"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    write_maintenance(labels, root)
    return SkabImport(devices=len(registry), rows=rows, events=len(events), dates=tuple(sorted(dates)))
