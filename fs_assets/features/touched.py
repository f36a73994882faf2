"""Which windows a features run recomputes: only those touched since the last run, and those just closed.

A day's features are recomputed whole on its first run (or when asked). After that a run reads the
clean table's change feed from the version its previous run read, and recomputes a window of a
device when
- a reading of that device changed in `[window_start, window_end)` (new, replaced or removed), or
- the window closed since the previous run (a window still open then was not written).
So on a day in progress each run writes the windows that closed since the last one, the 1-day
window is written once the day is over, and a late file recomputes only the windows it lands in.
A window whose readings are all gone is deleted.

Whether the feed still reaches back is decided before reading it (`fs_resources.change_feed`): a
day is recomputed whole, its metadata saying why and with which versions (`change_feed_fallback`),
when the clean table was created anew since (its table id differs from the one recorded with the
version, or, for a record without one, it was created after that run), when its versions went back,
when the feed was off, or when the log or the files of the range are gone (log retention, VACUUM).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import dagster as dg
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fs_assets.features.windows import closed_until, window_end, window_start
from fs_assets.timestamps import instant
from fs_resources.change_feed import TableIdentity, feed_range
from fs_resources.delta import DeltaTables

CLEAN_VERSION_KEY = "clean_delta_version"
CLEAN_TABLE_ID_KEY = "clean_table_id"
CLEAN_FEED_KEY = "clean_change_feed"
FALLBACK_KEY = "change_feed_fallback"
COMPUTED_AT_KEY = "computed_at"
VERSION_KEY = "feature_set_version"
# Per feature set version the run wrote: what it read and when (the flat keys above are the
# deployment's version's, for runs that wrote one version).
VERSIONS_KEY = "feature_set_versions"


@dataclass
class Previous:
    clean_version: int
    computed_at: datetime
    # Unset in records written before they were kept.
    clean_table_id: str | None = None
    change_feed: bool | None = None


@dataclass
class Plan:
    full_days: list[str]
    incremental_days: list[str]
    why: dict[str, str] = field(default_factory=dict)
    since: dict[str, Previous] = field(default_factory=dict)
    # Days recomputed whole because the change feed from their recorded version is gone: why, and the versions.
    fallback: dict[str, dict] = field(default_factory=dict)


def previous_run(instance: dg.DagsterInstance, key: dg.AssetKey, day: str, version: str) -> Previous | None:
    """What the last materialization of `day` read and when, if it recorded it for this feature set version."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=1).records
    if not records or records[0].asset_materialization is None:
        return None
    md = {k: v.value for k, v in records[0].asset_materialization.metadata.items()}
    if VERSIONS_KEY in md:
        # A run of every served version: each version's record is its own.
        md = {**(md[VERSIONS_KEY].get(version) or {}), VERSION_KEY: version} if version in md[VERSIONS_KEY] else {}
    if CLEAN_VERSION_KEY not in md or COMPUTED_AT_KEY not in md or md.get(VERSION_KEY) != version:
        return None
    return Previous(
        int(md[CLEAN_VERSION_KEY]),
        datetime.fromisoformat(str(md[COMPUTED_AT_KEY])),
        str(md[CLEAN_TABLE_ID_KEY]) if md.get(CLEAN_TABLE_ID_KEY) is not None else None,
        bool(md[CLEAN_FEED_KEY]) if md.get(CLEAN_FEED_KEY) is not None else None,
    )


def feed_gone(delta: DeltaTables, table: str, prev: Previous, current: TableIdentity, clean_version: int) -> dict | None:
    """Why the clean table's changes since `prev` cannot be read from its change feed, with the
    versions compared; None when they can."""
    facts = {
        "recorded_version": prev.clean_version,
        "recorded_table_id": prev.clean_table_id,
        "recorded_at": prev.computed_at.isoformat(),
        "current_version": clean_version,
        "table_id": current.table_id,
        "table_created_at": current.created_at.isoformat(),
    }
    reason = None
    if prev.clean_table_id is not None and prev.clean_table_id != current.table_id:
        reason = f"the clean table was created anew (table id {prev.clean_table_id} is now {current.table_id}): v{prev.clean_version} was a version of the old one"
    elif prev.clean_table_id is None and current.created_at > prev.computed_at:
        reason = f"the clean table was created anew at {current.created_at.isoformat()}, after the run that read its v{prev.clean_version}"
    elif prev.clean_version > clean_version:
        reason = f"the clean table is at v{clean_version}, before v{prev.clean_version} recorded: its versions went back"
    elif prev.change_feed is False:
        reason = f"the clean table's change feed was off at v{prev.clean_version}"
    elif prev.clean_version < clean_version:
        feed = feed_range(delta, table, prev.clean_version + 1, clean_version)
        facts["oldest_version_in_log"] = feed.oldest_commit
        reason = feed.gone
    return facts | {"reason": reason} if reason else None


def plan(
    instance: dg.DagsterInstance,
    key: dg.AssetKey,
    days: list[str],
    version: str,
    full: bool,
    delta: DeltaTables,
    table: str,
    current: TableIdentity,
    clean_version: int,
) -> Plan:
    """Which days are recomputed whole and why; the others from the change feed of `table` (at
    `clean_version`, of identity `current`) since their previous run."""
    result = Plan([], [])
    gone_since: dict[tuple[int, str | None, bool | None, datetime], dict | None] = {}
    for day in days:
        prev = None if full else previous_run(instance, key, day, version)
        if prev is None:
            result.full_days.append(day)
            result.why[day] = "recomputed whole: " + (
                "asked for (`full: true`)" if full else "no earlier run of this day recorded what it read"
            )
            continue
        recorded = (prev.clean_version, prev.clean_table_id, prev.change_feed, prev.computed_at)
        if recorded not in gone_since:
            gone_since[recorded] = feed_gone(delta, table, prev, current, clean_version)
        if (gone := gone_since[recorded]) is not None:
            result.full_days.append(day)
            result.why[day] = f"recomputed whole: {gone['reason']}"
            result.fallback[day] = gone
        else:
            result.incremental_days.append(day)
            result.since[day] = prev
            result.why[day] = f"windows touched since clean v{prev.clean_version}, or closed since {prev.computed_at.isoformat()}"
    return result


def touched_windows(
    delta: DeltaTables, table: str, clean: DataFrame, clean_version: int, plan: Plan, minutes: int, now: datetime
) -> DataFrame:
    """(device_id, window_start) of the closed windows of the incremental days to recompute (their
    change feed checked readable by `plan`)."""
    days = plan.incremental_days
    since = min(plan.since[d].clean_version for d in days)
    changed = clean.limit(0).select("device_id", "ts")
    if since < clean_version:
        changed = delta.changes(table, since + 1, clean_version).where(F.col("reading_date").isin(days)).select("device_id", "ts")
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
        recent = (F.col("ts") >= instant(open_then)) & (F.col("ts") < instant(open_now))
        starts = clean.where((F.col("reading_date") == day) & recent)
        just_closed.append(starts.select("device_id", window_start(F.col("ts"), minutes).alias("window_start")))
    for frame in just_closed:
        keys = keys.unionByName(frame)
    # A window still open is not written; a later run recomputes it as just closed.
    closed = window_end(F.col("window_start"), minutes) <= instant(now)
    return keys.where(closed).distinct()
