"""Reading the silences declared for a day (`fs_domain.contract.EXPECTED_GAP_COLUMNS`).

A row that cannot be read (an unparseable or empty interval) declares nothing: the device it names
is then judged like any other, so a typo can page but never hide a silence.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from fs_assets.ingest.registry import read_text_columns
from fs_domain.contract import EXPECTED_GAP_COLUMNS
from fs_resources import settings
from fs_resources.filesystem import FileSystem


class ExpectedGapsError(ValueError):
    """The day's expected-gaps file cannot be used at all (missing columns)."""


def read_expected_gaps(day: str, fs: FileSystem) -> pd.DataFrame:
    """The gaps declared for UTC day `day`, `gap_start`/`gap_end` as UTC timestamps; empty when none are."""
    path = settings.expected_gaps_csv_path(day)
    data = fs.read_bytes(path)
    if data is None:
        return pd.DataFrame({c: pd.Series(dtype="datetime64[ns, UTC]" if c.startswith("gap_") else str) for c in EXPECTED_GAP_COLUMNS})
    frame = read_text_columns(path, data, EXPECTED_GAP_COLUMNS, "expected-gaps file", ExpectedGapsError)
    for column in ("gap_start", "gap_end"):
        frame[column] = pd.to_datetime(frame[column], utc=True, errors="coerce")
    return frame[frame["gap_start"].notna() & (frame["gap_end"] > frame["gap_start"])].reset_index(drop=True)


def declared_during(gaps: pd.DataFrame, start: datetime, end: datetime) -> dict[str, str]:
    """Device id -> reason, for the gaps that overlap [start, end)."""
    overlapping = gaps[(gaps["gap_start"] < pd.Timestamp(end)) & (gaps["gap_end"] > pd.Timestamp(start))]
    return dict(zip(overlapping["device_id"], overlapping["reason"]))
