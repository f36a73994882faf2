"""Which windows a features run recomputes: only those touched since the last run, and those just closed.

A day's features are recomputed whole on its first run (or when asked). After that a run reads the
clean table's change feed from the version its previous run read, and recomputes a window of a
device when
- a reading of that device changed in `[window_start, window_end)` (new, replaced or removed), or
- the window closed since the previous run (a window still open then was not written).
So on a day in progress each run writes the windows that closed since the last one, the 1-day
window is written once the day is over, and a late file recomputes only the windows it lands in.
A window whose readings are all gone is deleted. Without the change feed for the whole range
(a table from before it was enabled, or history cleaned past it) the day is recomputed whole, and
the run's metadata says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import dagster as dg
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fs_assets.features.windows import MICROS_PER_MINUTE, closed_until, window_start
from fs_resources.delta import DeltaTables

CLEAN_VERSION_KEY = "clean_delta_version"
TEXT = "%Y-%m-%d %H:%M:%S.%f"  # a UTC instant as Spark's timestamp text
COMPUTED_AT_KEY = "computed_at"
VERSION_KEY = "feature_set_version"


@dataclass
class Previous:
    clean_version: int
    computed_at: datetime


@dataclass
class Plan:
    full_days: list[str]
    incremental_days: list[str]
    why: dict[str, str] = field(default_factory=dict)
    since: dict[str, Previous] = field(default_factory=dict)


def previous_run(instance: dg.DagsterInstance, key: dg.AssetKey, day: str, version: str) -> Previous | None:
    """What the last materialization of `day` read and when, if it recorded it for this feature set version."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=1).records
    if not records or records[0].asset_materialization is None:
        return None
    md = records[0].asset_materialization.metadata
    if CLEAN_VERSION_KEY not in md or COMPUTED_AT_KEY not in md or md.get(VERSION_KEY) is None or md[VERSION_KEY].value != version:
        return None
    return Previous(int(md[CLEAN_VERSION_KEY].value), datetime.fromisoformat(str(md[COMPUTED_AT_KEY].value)))


def plan(instance: dg.DagsterInstance, key: dg.AssetKey, days: list[str], version: str, full: bool) -> Plan:
    result = Plan([], [])
    for day in days:
        prev = None if full else previous_run(instance, key, day, version)
        if prev is None:
            result.full_days.append(day)
            result.why[day] = "recomputed whole: " + (
                "asked for (`full: true`)" if full else "no earlier run of this day recorded what it read"
            )
        else:
            result.incremental_days.append(day)
            result.since[day] = prev
            result.why[day] = f"windows touched since clean v{prev.clean_version}, or closed since {prev.computed_at.isoformat()}"
    return result


def _window_end(start: F.Column, minutes: int) -> F.Column:
    return F.timestamp_micros(F.unix_micros(start) + F.lit(minutes * MICROS_PER_MINUTE))


def touched_windows(
    delta: DeltaTables, table: str, clean: DataFrame, clean_version: int, plan: Plan, minutes: int, now: datetime
) -> DataFrame | None:
    """(device_id, window_start) of the closed windows of the incremental days to recompute, or None when the change feed cannot tell."""
    days = plan.incremental_days
    since = min(plan.since[d].clean_version for d in days)
    changed = clean.limit(0).select("device_id", "ts")
    if since < clean_version:
        try:
            changed = delta.changes(table, since + 1, clean_version).where(F.col("reading_date").isin(days)).select("device_id", "ts")
            changed.limit(1).collect()  # the feed's range is checked here, not in the middle of the job
        except Exception as exc:  # Delta raises an AnalysisException naming the missing range
            if "change" not in str(exc).lower() and "cdc" not in str(exc).lower():
                raise
            return None
    now_text = now.strftime(TEXT)
    keys = changed.select("device_id", window_start(F.col("ts"), minutes).alias("window_start"))
    just_closed = []
    for day in days:
        # The windows that closed since the last run are those from the one open then to the one
        # open now. None on most runs of the 1-day size (its window closes at midnight) or when no
        # boundary of this size passed; otherwise the bound lets Delta skip the day's older files by
        # their ts statistics, so a run's cost does not grow with the day.
        open_then, open_now = closed_until(plan.since[day].computed_at, minutes), closed_until(now, minutes)
        if open_now <= open_then:
            continue
        recent = (F.col("ts") >= F.lit(open_then.strftime(TEXT)).cast("timestamp")) & (
            F.col("ts") < F.lit(open_now.strftime(TEXT)).cast("timestamp")
        )
        starts = clean.where((F.col("reading_date") == day) & recent)
        just_closed.append(starts.select("device_id", window_start(F.col("ts"), minutes).alias("window_start")))
    for frame in just_closed:
        keys = keys.unionByName(frame)
    # A window still open is not written; a later run recomputes it as just closed.
    closed = _window_end(F.col("window_start"), minutes) <= F.lit(now_text).cast("timestamp")
    return keys.where(closed).distinct()
