"""Checks on the feature assets: schema, keys, look-back only, coverage, backfill completeness, freshness.

Each judges the run and partition it belongs to: the materialization of its own partition by its
own run (or, run alone, the latest of that partition; never the latest of any partition, which a
backfill of another day would be), the clean table at the version that run read, and only the
windows closed when it ran. A day in progress passes every check whose data is right: its open
windows are neither written nor expected.
"""

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dagster as dg
from pyspark.sql import functions as F

from fs_assets.features import touched
from fs_assets.features.windows import closed_until, window_end, with_window
from fs_assets.ingest.expected_gaps import ExpectedGapsError, declared_during, read_expected_gaps
from fs_assets.metadata import latest_key
from fs_assets.partitions import daily_partitions
from fs_assets.timestamps import instant
from fs_checks.results import check_result
from fs_domain.features import Window
from fs_domain.tables import CLEAN_TABLE, REGISTRY_TABLE
from fs_domain.verdicts import Verdict, guide_section
from fs_resources import settings
from fs_resources.delta import DeltaTables
from fs_resources.feature_store import FeatureStoreResource
from fs_resources.filesystem import filesystem_for
from fs_resources.schemas import features_spark_schema

CHECK_SCHEMA = "check_feature_schema"
CHECK_KEY_UNIQUE = "check_feature_key_unique"
CHECK_LOOKS_BACKWARD = "check_windows_look_backward"
CHECK_COVERAGE = "check_feature_coverage"
CHECK_BACKFILL = "check_backfill_completeness"

# Device coverage of the latest window against the devices expected in it (DESIGN.md, monitoring).
COVERAGE_TARGET = 0.99
COVERAGE_ALERT = 0.95
# How far back among a partition's materializations a check looks for its own run's: the runs of one
# day follow each other (one pool per table), so its own is among the last few.
RECENT_MATERIALIZATIONS = 10
# How many device ids a coverage result names, of those missing and of those expected to be silent.
EXAMPLES = 20
# How many sites of missing devices a coverage result's description names (most missing first).
SITES_NAMED = 3

WHAT_TO_DO_TABLE = (
    f"The feature table is wrong for this day (see the counts beside): re-run it with `full: true`; "
    f"{guide_section('Features: schema, keys and look-back')}"
)
WHAT_TO_DO_COVERAGE = (
    f"Devices without features in the latest window: look at `missing_examples` (one site: a gateway; quarantined: the registry); "
    f"{guide_section('Features: coverage')}"
)
WHAT_TO_DO_BACKFILL = f"Days with readings but no features: materialize the feature asset for `missing_days`; {guide_section('Features: backfill completeness')}"


@dataclass(frozen=True)
class Coverage:
    """One feature set version's coverage of its latest window; `start` is None when none had closed."""

    start: datetime | None
    written_any: bool = False
    coverage: float = 1.0
    covered: int = 0
    expected: int = 0
    installed: int = 0
    excused: dict[str, str] = field(default_factory=dict)
    silent: list[str] = field(default_factory=list)
    by_site: dict[str, str] = field(default_factory=dict)
    unreadable: str | None = None


def build_feature_checks(window: Window) -> list[dg.AssetChecksDefinition]:
    """The checks of one feature asset (one window size), each over the partitions its run wrote."""
    return [build(window) for build in (_schema_check, _key_check, _look_back_check, _coverage_check, _backfill_check)]


# What every check reads: the rows its run wrote, the materialization it judges, the clean readings
# that run read and when it ran.


def written(context, delta: DeltaTables, feature_store: FeatureStoreResource, minutes: int, version: str | None = None):
    """A version's table (the deployment's unless named), its rows of `minutes` the run wrote, and the days."""
    days = list(context.partition_keys)
    table = delta.read(feature_store.features_table(version))
    return table, table.where(F.col("window_date").isin(days) & (F.col("window_duration_minutes") == minutes)), days


def failing(per_version: dict[str, int], what: str) -> str | None:
    """Which served versions hold how many of `what`, for the description (None when none does)."""
    bad = {v: n for v, n in per_version.items() if n}
    return "; ".join(f"{n} {what} in {v}" for v, n in bad.items()) if bad else None


def materializations(context, window: Window) -> tuple[dg.EventLogRecord | None, dg.EventLogRecord | None]:
    """The materialization the check judges, and the one of its partitions before it. Judged: its
    own run's, when that run wrote the asset, else the latest of the check's own partitions; never
    another partition's, so a backfill of another day materializing meanwhile leaves this day's
    verdict alone."""
    filters = dg.AssetRecordsFilter(asset_key=dg.AssetKey(window.asset_name), asset_partitions=list(context.partition_keys))
    records = context.instance.fetch_materializations(filters, limit=RECENT_MATERIALIZATIONS).records
    i = next((i for i, r in enumerate(records) if r.run_id == context.run.run_id), 0)
    return (records[i] if records else None), (records[i + 1] if i + 1 < len(records) else None)


def as_run(delta: DeltaTables, record: dg.EventLogRecord | None):
    """The clean readings the judged run read and the time it ran (what a window had to end by to be written)."""
    md = record.asset_materialization.metadata if record and record.asset_materialization else {}
    if touched.CLEAN_VERSION_KEY in md and touched.COMPUTED_AT_KEY in md:
        clean = delta.read(CLEAN_TABLE, version=int(md[touched.CLEAN_VERSION_KEY].value))
        return clean, datetime.fromisoformat(str(md[touched.COMPUTED_AT_KEY].value))
    return delta.read(CLEAN_TABLE), datetime.now(UTC)


def verdict(window: Window, record: dg.EventLogRecord | None, observed, threshold, comparison: str, unit: str, what_to_do: str) -> Verdict:
    return Verdict(observed, threshold, comparison, unit, what_to_do, asset=window.asset_name, run_id=record.run_id if record else None)


def closed_by(start: F.Column, cutoff: datetime, minutes: int) -> F.Column:
    """Whether the window of `minutes` from `start` had closed at `cutoff`."""
    return window_end(start, minutes) <= instant(cutoff)


def _schema_check(window: Window) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=window.asset_name,
        name=CHECK_SCHEMA,
        partitions_def=daily_partitions,
        blocking=True,
        description="The table's columns and types equal the feature registry's.",
    )
    def check_feature_schema(
        context: dg.AssetCheckExecutionContext, delta: DeltaTables, feature_store: FeatureStoreResource
    ) -> dg.AssetCheckResult:
        # Every version the run wrote (a model pinned to v2 trains and is served from v2's table),
        # each against its own registry; the deployment's is shown first.
        shapes = {}
        for version in feature_store.versions():
            table, _, _ = written(context, delta, feature_store, window.minutes, version)
            shapes[version] = schema_shape(version, table)
        differing = {v: len(x["missing"]) + len(x["unexpected"]) + x["misplaced"] for v, x in shapes.items()}
        deployed = shapes[feature_store.version()]
        record, _ = materializations(context, window)
        return check_result(
            verdict(window, record, sum(differing.values()), 0, "==", "columns differing from the registry", WHAT_TO_DO_TABLE),
            context=context,
            description=failing(differing, "columns differing from the registry"),
            metadata={
                "columns": deployed["columns"],
                "missing": dg.MetadataValue.json(deployed["missing"]),
                "unexpected": dg.MetadataValue.json(deployed["unexpected"]),
                "misplaced": deployed["misplaced"],
                "order_matches": deployed["order_matches"],
                "versions": dg.MetadataValue.json(shapes),
            },
        )

    return check_feature_schema


def schema_shape(version: str, table) -> dict:
    """How a version's table differs from its registry: columns missing, unexpected and out of place."""
    expected = [(f.name, f.dataType.simpleString()) for f in features_spark_schema(version).fields]
    actual = [(f.name, f.dataType.simpleString()) for f in table.schema.fields]
    common = [c for c in expected if c in actual]
    return {
        "columns": len(actual),
        "missing": [c for c in expected if c not in actual],
        "unexpected": [c for c in actual if c not in expected],
        "misplaced": sum(a != b for a, b in zip(common, [c for c in actual if c in expected])),
        "order_matches": [c[0] for c in expected] == [c[0] for c in actual],
    }


def _key_check(window: Window) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=window.asset_name,
        name=CHECK_KEY_UNIQUE,
        partitions_def=daily_partitions,
        blocking=True,
        description="One row per (device_id, window_start, window_duration_minutes).",
    )
    def check_feature_key_unique(
        context: dg.AssetCheckExecutionContext, delta: DeltaTables, feature_store: FeatureStoreResource
    ) -> dg.AssetCheckResult:
        dupes, days = {}, list(context.partition_keys)
        for version in feature_store.versions():  # every version the run wrote, as the schema check
            _, rows, days = written(context, delta, feature_store, window.minutes, version)
            dupes[version] = rows.groupBy("device_id", "window_start").count().where("count > 1").count()
        record, _ = materializations(context, window)
        return check_result(
            verdict(window, record, sum(dupes.values()), 0, "==", "duplicated keys", WHAT_TO_DO_TABLE),
            context=context,
            description=failing(dupes, "duplicated keys"),
            metadata={"duplicate_keys": sum(dupes.values()), "by_version": dg.MetadataValue.json(dupes), "partitions": ", ".join(days)},
        )

    return check_feature_key_unique


def _look_back_check(window: Window) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=window.asset_name,
        name=CHECK_LOOKS_BACKWARD,
        partitions_def=daily_partitions,
        blocking=True,
        description="window_end <= computed_at, windows are aligned and sized, and reading_count equals the clean readings inside "
        "[window_start, window_end) for every window closed when the run ran. After an earlier run of the same day, only the "
        "windows closed since it and any the run rewrote (late data); otherwise the days whole. In every feature set version "
        "the deployment computes.",
    )
    def check_windows_look_backward(
        context: dg.AssetCheckExecutionContext, delta: DeltaTables, feature_store: FeatureStoreResource
    ) -> dg.AssetCheckResult:
        record, previous = materializations(context, window)
        clean, ran_at = as_run(delta, record)
        counts, scopes = {}, {}
        for version in feature_store.versions():  # every version the run wrote, as the schema check
            _, rows, days = written(context, delta, feature_store, window.minutes, version)
            # The runs write every version together: the deployment's record of the run before says what was judged.
            span = judged_span(previous, rows, days, ran_at, feature_store.version(), window.minutes)
            counts[version], scopes[version] = looking_backward(rows, clean, days, span, ran_at, window.minutes)
        wrong = {v: sum(c.values()) for v, c in counts.items()}
        return check_result(
            verdict(window, record, sum(wrong.values()), 0, "==", "windows looking forward, misshapen or miscounted", WHAT_TO_DO_TABLE),
            context=context,
            description=failing(wrong, "windows looking forward, misshapen or miscounted"),
            metadata={
                **counts[feature_store.version()],
                "judged_windows_closed_by": ran_at.isoformat(),
                "scope": scopes[feature_store.version()],
                "by_version": dg.MetadataValue.json(counts),
            },
        )

    return check_windows_look_backward


def judged_span(
    previous: dg.EventLogRecord | None, rows, days: list[str], ran_at: datetime, version: str, minutes: int
) -> tuple[datetime, datetime] | None:
    """[lo, hi) of the windows a one-day run is judged on: from the end of the newest window the
    day's run before it had written (or the first window this run rewrote, if earlier) to the end
    of the last window closed when it ran. None (judge the days whole) for a run of several days,
    the day's first run, or one after another feature set version's."""
    if len(days) != 1 or previous is None or previous.asset_materialization is None:
        return None
    md = previous.asset_materialization.metadata
    latest = md.get(latest_key("window_end"))
    same_version = md.get(touched.VERSION_KEY) is not None and md[touched.VERSION_KEY].value == version
    if latest is None or latest.value == "none" or not same_version:
        return None
    lo = datetime.fromisoformat(str(latest.value)).replace(tzinfo=UTC)
    rewritten = rows.where(F.col("computed_at") == instant(ran_at)).agg(F.min(F.unix_micros("window_start"))).first()[0]
    if rewritten is not None:
        lo = min(lo, datetime.fromtimestamp(rewritten / 1_000_000, tz=UTC))
    return lo, closed_until(ran_at.astimezone(UTC), minutes)


def looking_backward(
    rows, clean, days: list[str], span: tuple[datetime, datetime] | None, ran_at: datetime, minutes: int
) -> tuple[dict[str, int], str]:
    """One version's windows ending after the run, misshapen, or miscounting the readings inside them
    (within `span` when given, else the days whole), and the scope judged."""
    future = rows.where(F.col("window_end") > F.col("computed_at")).count()
    misshapen = rows.where(
        (F.unix_seconds("window_end") - F.unix_seconds("window_start") != minutes * 60)
        | (F.unix_seconds("window_start") % (minutes * 60) != 0)
        | (F.to_date("window_start") != F.col("window_date"))
    ).count()
    readings = clean.where(F.col("reading_date").isin(days))
    scope = "whole partitions"
    if span is not None:
        # Earlier windows were judged by the runs that wrote them: only the readings of the span
        # are counted again (Delta skips the day's other files by their ts statistics), so the
        # check costs what the run wrote, not the hour of the day.
        lo, hi = span
        rows = rows.where((F.col("window_start") >= instant(lo)) & (F.col("window_end") <= instant(hi)))
        readings = readings.where((F.col("ts") >= instant(lo)) & (F.col("ts") < instant(hi)))
        scope = f"windows from {lo:%Y-%m-%d %H:%M} to {hi:%Y-%m-%d %H:%M}: those closed since the previous run, and any it rewrote"
    inside = (
        with_window(readings.select("device_id", "ts"), minutes)
        .where(closed_by(F.col("window_start"), ran_at, minutes))
        .groupBy("device_id", "window_start")
        .agg(F.count(F.lit(1)).alias("inside"))
    )
    mismatched = (
        rows.select("device_id", "window_start", "reading_count")
        .join(inside, on=["device_id", "window_start"], how="full_outer")
        .where(~F.col("reading_count").eqNullSafe(F.col("inside")))
        .count()
    )
    counts = {"windows_ending_after_computed_at": future, "misaligned_windows": misshapen, "windows_with_outside_inputs": mismatched}
    return counts, scope


def _coverage_check(window: Window) -> dg.AssetChecksDefinition:
    minutes = window.minutes

    @dg.asset_check(
        asset=window.asset_name,
        name=CHECK_COVERAGE,
        partitions_def=daily_partitions,
        description=f"Devices with features in the latest window vs the devices expected in it (active, installed on or before "
        f"its day, less declared silences): warn below {COVERAGE_TARGET:.0%}, error below {COVERAGE_ALERT:.0%}. The least "
        f"covered of the feature set versions the deployment computes decides.",
    )
    def check_feature_coverage(
        context: dg.AssetCheckExecutionContext, delta: DeltaTables, feature_store: FeatureStoreResource
    ) -> dg.AssetCheckResult:
        record, _ = materializations(context, window)
        _, ran_at = as_run(delta, record)
        deployed = feature_store.version()
        # Every version the run wrote, each a table of its own: the least covered decides (the deployment's on a tie).
        of = {}
        for version in feature_store.versions():
            _, rows, days = written(context, delta, feature_store, minutes, version)
            of[version] = coverage_of(delta, rows, days, ran_at, minutes)
        version = min(of, key=lambda v: (of[v].coverage if of[v].start else 2.0, v != deployed))
        c = of[version]
        where = f"{version}: " if len(of) > 1 else ""
        by_version = dg.MetadataValue.json({v: round(x.coverage, 4) if x.start else "no window closed" for v, x in of.items()})
        if c.start is None:
            first_day = datetime.fromisoformat(min(days)).replace(tzinfo=UTC)
            into_day = round((ran_at - first_day).total_seconds() / 60, 1)
            return check_result(
                verdict(window, record, into_day, minutes, "<", "minutes into the day when the run ran", WHAT_TO_DO_COVERAGE),
                context=context,
                description=f"no {minutes}-minute window of {min(days)} had closed when the run ran",
                metadata={"latest_window_start": "none", "by_version": by_version},
            )
        erring = c.coverage < COVERAGE_ALERT
        threshold = COVERAGE_ALERT if erring else COVERAGE_TARGET
        return check_result(
            verdict(window, record, c.coverage, threshold, ">=", "share of expected devices", WHAT_TO_DO_COVERAGE),
            context=context,
            severity=dg.AssetCheckSeverity.ERROR if erring else dg.AssetCheckSeverity.WARN,
            description=f"{where}{c.covered:,} of {c.expected:,} expected devices have the {minutes}-minute window from {c.start:%Y-%m-%d %H:%M} UTC"
            + (f"; {len(c.excused):,} more are silent as declared" if c.excused else "")
            + (f"; missing at {sites_sentence(c.by_site)}" if c.by_site else ""),
            metadata={
                "covered_devices": c.covered,
                "expected_devices": c.expected,
                "installed_active_devices": c.installed,
                "expected_gaps": len(c.excused),
                "expected_gap_examples": dg.MetadataValue.json(dict(list(c.excused.items())[:EXAMPLES])),
                "missing_devices": len(c.silent),
                "missing_examples": dg.MetadataValue.json(c.silent[:EXAMPLES]),
                "missing_by_site": dg.MetadataValue.json(dict(list(c.by_site.items())[:EXAMPLES])),
                "latest_window_start": c.start.isoformat() if c.written_any else "none",
                "warn_below": COVERAGE_TARGET,
                "error_below": COVERAGE_ALERT,
                "by_version": by_version,
            }
            | ({"expected_gaps_unreadable": c.unreadable} if c.unreadable else {}),
        )

    return check_feature_coverage


def coverage_of(delta: DeltaTables, rows, days: list[str], ran_at: datetime, minutes: int) -> Coverage:
    """One version's coverage of its latest window (`start` None when no window of the days had closed)."""
    start, end, written_any = latest_window(rows, days, ran_at, minutes)
    if not written_any and end <= datetime.fromisoformat(min(days)).replace(tzinfo=UTC):
        return Coverage(None)
    expected = devices_expected(delta, start.date().isoformat())
    installed = expected.count()
    present = rows.where(F.unix_micros("window_start") == int(start.timestamp() * 1_000_000)).select("device_id")
    missing = sorted(
        r[0] for r in (expected.join(present, "device_id", "left_anti") if written_any else expected).select("device_id").collect()
    )
    declared, unreadable = declared_gaps(delta, start, end)
    excused = {d: declared[d] for d in missing if d in declared}
    silent = [d for d in missing if d not in declared]
    covered, denominator = installed - len(missing), installed - len(excused)
    return Coverage(
        start,
        written_any,
        covered / denominator if denominator else 1.0,
        covered,
        denominator,
        installed,
        excused,
        silent,
        missing_by_site(expected, silent, excused),
        unreadable,
    )


def latest_window(rows, days: list[str], ran_at: datetime, minutes: int) -> tuple[datetime, datetime, bool]:
    """[start, end) of the newest window the run wrote, and True; when it wrote none, the newest
    window that had closed by then (or the days' last), and False."""
    latest = rows.agg(F.max(F.unix_micros("window_start"))).first()[0]
    if latest is not None:
        start = datetime.fromtimestamp(latest / 1_000_000, tz=UTC)
        return start, start + timedelta(minutes=minutes), True
    after_last_day = datetime.fromisoformat(max(days)).replace(tzinfo=UTC) + timedelta(days=1)
    end = min(closed_until(ran_at.astimezone(UTC), minutes), after_last_day)
    return end - timedelta(minutes=minutes), end, False


def devices_expected(delta: DeltaTables, day: str):
    """Active devices installed on or before `day`: those that ought to report in its windows."""
    installed = F.col("install_date") <= F.lit(day).cast("date")
    return delta.read(REGISTRY_TABLE).where((F.col("status") == "active") & installed).select("device_id", "site_id")


def missing_by_site(expected, silent: list[str], excused: dict[str, str]) -> dict[str, str]:
    """Site -> "missing of expected" for the sites of the devices missing without a declared
    silence, most missing first: one site missing whole is its gateway, not its devices."""
    if not silent:
        return {}
    missing, expected_at = Counter(), Counter()
    silent_set = set(silent)
    for device, site in expected.select("device_id", "site_id").collect():
        if device not in excused:
            expected_at[site] += 1
            missing[site] += device in silent_set
    return {site: f"{n} of {expected_at[site]}" for site, n in missing.most_common() if n}


def sites_sentence(by_site: dict[str, str]) -> str:
    named = [f"{site} ({share} expected there)" for site, share in list(by_site.items())[:SITES_NAMED]]
    more = len(by_site) - len(named)
    return ", ".join(named) + (f" and {more} more site{'s' if more > 1 else ''}" if more else "")


def declared_gaps(delta: DeltaTables, start: datetime, end: datetime) -> tuple[dict[str, str], str | None]:
    """Device id -> reason of the silences declared over [start, end), and why none could be read."""
    try:
        gaps = read_expected_gaps(start.date().isoformat(), filesystem_for(settings.landing_root(), delta.session))
    except ExpectedGapsError as exc:
        return {}, str(exc)
    return declared_during(gaps, start, end), None


def _backfill_check(window: Window) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=window.asset_name,
        name=CHECK_BACKFILL,
        partitions_def=daily_partitions,
        description="Every day of the run with clean readings in a closed window has feature rows (no date gaps).",
    )
    def check_backfill_completeness(
        context: dg.AssetCheckExecutionContext, delta: DeltaTables, feature_store: FeatureStoreResource
    ) -> dg.AssetCheckResult:
        _, rows, days = written(context, delta, feature_store, window.minutes)
        record, _ = materializations(context, window)
        clean, ran_at = as_run(delta, record)
        with_readings = {
            r[0].isoformat()
            for r in with_window(clean.where(F.col("reading_date").isin(days)), window.minutes)
            .where(closed_by(F.col("window_start"), ran_at, window.minutes))
            .select("reading_date")
            .distinct()
            .collect()
        }
        with_features = {r[0].isoformat() for r in rows.select("window_date").distinct().collect()}
        gaps = sorted(with_readings - with_features)
        return check_result(
            verdict(window, record, len(gaps), 0, "==", "days with readings but no features", WHAT_TO_DO_BACKFILL),
            context=context,
            metadata={"days_in_run": len(days), "days_with_readings": len(with_readings), "missing_days": dg.MetadataValue.json(gaps)},
        )

    return check_backfill_completeness
