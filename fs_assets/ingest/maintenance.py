"""Reading and validating the maintenance events CSV (failure labels for training sets)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fs_assets.ingest.registry import read_text_columns
from fs_domain.contract import DEVICE_ID_PATTERN, MAINTENANCE_COLUMNS
from fs_resources.filesystem import FileSystem, LocalFileSystem

# Event types a label can be built from: the simulator's compressor failures and the fault onsets
# of real data (SKAB). `service` and `fault_end` close an episode.
EVENT_TYPES: tuple[str, ...] = ("failure", "service", "fault_start", "fault_end")


class MaintenanceError(ValueError):
    """The events file cannot be used at all (missing columns)."""


@dataclass(frozen=True)
class MaintenanceRead:
    events: pd.DataFrame  # event_time as UTC timestamps
    rejected: pd.DataFrame  # the raw row plus a `problem` column


def read_maintenance(path: str | Path, fs: FileSystem | None = None) -> MaintenanceRead:
    """Valid events, typed, and rejected rows with the reason for each. A missing file means no
    events yet (a new fleet), not an error. Timestamps without an offset are taken as UTC."""
    data = (fs or LocalFileSystem()).read_bytes(str(path))
    if data is None:
        empty = pd.DataFrame({c: pd.Series(dtype=object) for c in MAINTENANCE_COLUMNS})
        empty["event_time"] = pd.Series(dtype="datetime64[us, UTC]")
        return MaintenanceRead(empty, empty.assign(problem=pd.Series(dtype=object)))
    raw = read_text_columns(str(path), data, MAINTENANCE_COLUMNS, "maintenance events file", MaintenanceError)
    times = pd.to_datetime(raw["event_time"], utc=True, errors="coerce", format="ISO8601")
    problems = pd.Series(None, index=raw.index, dtype=object)
    problems[~raw["device_id"].map(lambda d: bool(DEVICE_ID_PATTERN.fullmatch(d)))] = "malformed device id"
    problems[problems.isna() & times.isna()] = "event_time is not an ISO-8601 timestamp"
    problems[problems.isna() & ~raw["event_type"].isin(EVENT_TYPES)] = f"event_type is not one of {list(EVENT_TYPES)}"
    rejected = raw[problems.notna()].assign(problem=problems[problems.notna()])
    events = raw[problems.isna()].copy()
    events["event_time"] = times[problems.isna()].astype("datetime64[us, UTC]")
    events = events.drop_duplicates().sort_values(["device_id", "event_time"], kind="stable")
    return MaintenanceRead(events.reset_index(drop=True), rejected.reset_index(drop=True))
