"""Small `device_features` tables written exactly as the feature assets write them, a
brute-force point-in-time reference to hold the offline store to, and the instants between commits
that `as_of` reads are pinned to."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd

from fs_domain.features import features_for
from fs_resources.delta import DeltaTables
from fs_resources.schemas import features_spark_schema
from fs_resources.spark import DeltaSparkResource
from tests.conftest import wait_until

UTC = timezone.utc


def windows_frame(windows: list[tuple[str, datetime, int]], seed: int = 1, version: str = "v1", offset: float = 0.0) -> pd.DataFrame:
    """One feature row per (device_id, window_start, minutes); features are seeded random values
    (`offset` added to tell two computations of the same windows apart)."""
    rng = random.Random(seed)
    rows = []
    for device_id, start, minutes in windows:
        row = {"device_id": device_id, "window_start": start, "window_end": start + timedelta(minutes=minutes)}
        for f in features_for(version):
            if f.dtype == "long":
                row[f.name] = rng.randrange(0, minutes + 1)
            else:
                row[f.name] = None if rng.random() < 0.05 else rng.uniform(-30, 30) + offset
        row |= {
            "window_duration_minutes": minutes,
            "window_date": start.date(),
            "computed_at": datetime.now(UTC),
            "feature_set_version": version,
        }
        rows.append(row)
    # Doubles typed as such: a column whose few values all came out NULL would otherwise be objects.
    return pd.DataFrame(rows).astype({f.name: "float64" for f in features_for(version) if f.dtype != "long"})


def write_windows(spark, frame: pd.DataFrame, version: str = "v1") -> None:
    schema = features_spark_schema(version)

    def plain(value):
        if isinstance(value, pd.Timestamp):
            return value.to_pydatetime()
        return None if value is None or (isinstance(value, float) and value != value) else value

    records = [tuple(plain(r[f.name]) for f in schema.fields) for r in frame.to_dict("records")]
    df = spark.createDataFrame(records, schema)
    DeltaTables(spark=DeltaSparkResource()).replace_partitions(
        df,
        f"device_features/{version}",
        {"window_date": sorted(set(frame["window_date"])), "window_duration_minutes": sorted(set(frame["window_duration_minutes"]))},
    )


def reference_join(entities: pd.DataFrame, windows: pd.DataFrame, features: list[str], minutes: int, tolerance: timedelta) -> pd.DataFrame:
    """Row by row: the latest window of `minutes` with event_time - tolerance <= window_end <= event_time."""
    sized = windows[windows["window_duration_minutes"] == minutes]
    by_device = {d: g for d, g in sized.groupby("device_id")}
    out = []
    for device_id, event_time in zip(entities["device_id"], entities["event_time"]):
        match = None
        group = by_device.get(device_id)
        if group is not None and not pd.isna(event_time):
            for _, w in group.iterrows():
                end = pd.Timestamp(w["window_end"])
                if event_time - tolerance <= end <= event_time and (match is None or end > match["window_end"]):
                    match = w
        row = {f: (None if match is None else match[f]) for f in features}
        row["feature_window_end"] = None if match is None else pd.Timestamp(match["window_end"])
        out.append(row)
    return pd.DataFrame(out)


# Time travel finds a commit by its timestamp: Spark by the log file's modification time, delta-rs
# by the commit's own timestamp; both are milliseconds and a few ms apart (a coarse file-system clock).
COMMIT_CLOCK_MARGIN = timedelta(milliseconds=100)


def commit_times(table_path: str) -> tuple[datetime, datetime]:
    """The earliest and latest timestamp either reader may give the table's latest commit."""
    from deltalake import DeltaTable

    table = DeltaTable(table_path)
    log_file = Path(table_path) / "_delta_log" / f"{table.version():020d}.json"
    stamps = [table.history(1)[0]["timestamp"], log_file.stat().st_mtime_ns // 1_000_000]
    earliest, latest = (datetime.fromtimestamp(ms / 1000, UTC) for ms in (min(stamps), max(stamps)))
    return earliest, latest


def an_instant_after_the_last_commit(table_path: str) -> datetime:
    """Wait (bounded) until the clock is clearly past the table's latest commit, and return that
    instant: `as_of` it reads that commit. A commit made after `wait_past(instant)` is not seen."""
    _, latest = commit_times(table_path)
    wait_past(latest)
    return datetime.now(UTC)


def wait_past(instant: datetime) -> None:
    """Wait (bounded) until the clock is `COMMIT_CLOCK_MARGIN` past `instant`."""
    wait_until(lambda: datetime.now(UTC) > instant + COMMIT_CLOCK_MARGIN, timeout=10, what=f"the clock to pass {instant.isoformat()}")
