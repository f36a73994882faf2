"""Helpers that write small landing files and registries for tests."""

from datetime import date
from pathlib import Path

import pandas as pd

from fs_domain.contract import LANDING_COLUMNS, SENSOR_NAMES
from fs_resources import settings
from fs_resources.simulator.fleet import write_parquet, write_registry

NORMAL = {
    "temp_evaporator": -20.0,
    "temp_condenser": 40.0,
    "temp_discharge": 70.0,
    "current_compressor": 8.0,
    "pressure_high": 15.0,
    "pressure_low": 2.0,
    "vibration_compressor": 2.0,
}


def day_folder(root: Path, day: date | str) -> Path:
    folder = Path(settings.landing_root(str(root))) / f"date={day}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def readings(device_id: str, day: date, minutes: range, **overrides) -> pd.DataFrame:
    ts = pd.Timestamp(day, tz="UTC") + pd.to_timedelta(list(minutes), unit="min")
    frame = pd.DataFrame({"device_id": device_id, "ts": ts})
    for name in SENSOR_NAMES:
        frame[name] = overrides.get(name, NORMAL[name])
    return frame[list(LANDING_COLUMNS)]


def write_readings(root: Path, day: date, name: str, frame: pd.DataFrame) -> Path:
    path = day_folder(root, day) / name
    write_parquet(frame, path)
    return path


def registry(
    root: Path, device_ids, status: str = "active", sites: dict[str, str] | None = None, installed: dict[str, str] | None = None
) -> Path:
    """Every device at site-0001, installed 2024-01-01, unless `sites` or `installed` says otherwise."""
    ids = list(device_ids)
    frame = pd.DataFrame(
        {
            "device_id": ids,
            "site_id": [(sites or {}).get(d, "site-0001") for d in ids],
            "model": "CoolMax 300",
            "refrigerant": "R404A",
            "install_date": [(installed or {}).get(d, "2024-01-01") for d in ids],
            "status": status,
        }
    )
    return write_registry(frame, str(root))
