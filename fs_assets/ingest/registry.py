"""Reading and validating the device registry CSV (one row per device)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd

from fs_domain.contract import DEVICE_ID_PATTERN, DEVICE_STATUSES, REGISTRY_COLUMNS
from fs_resources.filesystem import FileSystem, LocalFileSystem


class RegistryError(ValueError):
    """The registry file cannot be used at all (missing, or missing columns)."""


@dataclass(frozen=True)
class RegistryRead:
    devices: pd.DataFrame
    rejected: pd.DataFrame  # the raw row plus a `problem` column


def _row_problem(row: pd.Series) -> str | None:
    if not DEVICE_ID_PATTERN.fullmatch(row["device_id"] or ""):
        return f"malformed device id {row['device_id']!r}"
    if row["status"] not in DEVICE_STATUSES:
        return f"status {row['status']!r} is not one of {list(DEVICE_STATUSES)}"
    try:
        date.fromisoformat(row["install_date"])
    except ValueError:
        return f"install_date {row['install_date']!r} is not YYYY-MM-DD"
    return None


def read_text_columns(path: str, data: bytes, columns: tuple[str, ...], what: str, error: type[ValueError]) -> pd.DataFrame:
    """A CSV of the landing zone as stripped text, exactly `columns`; `error` names any missing.

    The file is read in one piece before parsing, so a writer appending meanwhile cannot leave the
    parser with half of its change."""
    raw = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    raw.columns = [c.strip() for c in raw.columns]
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        raise error(f"{what} {path} lacks columns {missing} (expected {list(columns)})")
    return raw[list(columns)].apply(lambda col: col.str.strip())


def read_registry(path: str | Path, fs: FileSystem | None = None) -> RegistryRead:
    """The registry's valid rows, typed, and its rejected rows with the reason for each.

    A device id listed twice keeps its last row; the earlier ones are rejected as duplicates.
    """
    data = (fs or LocalFileSystem()).read_bytes(str(path))
    if data is None:
        raise RegistryError(f"device registry not found at {path}; `fs-sim generate` writes one, or place devices.csv there")
    raw = read_text_columns(str(path), data, REGISTRY_COLUMNS, "device registry", RegistryError)
    problems = raw.apply(_row_problem, axis=1)
    duplicated = raw["device_id"].duplicated(keep="last") & problems.isna()
    problems[duplicated] = "device id listed again further down; the last row wins"
    rejected = raw[problems.notna()].assign(problem=problems[problems.notna()])
    devices = raw[problems.isna()].copy()
    devices["install_date"] = pd.to_datetime(devices["install_date"]).dt.date
    return RegistryRead(devices.reset_index(drop=True), rejected.reset_index(drop=True))
