"""Freshness by data time: the one check per clock that can page (DESIGN.md, Monitoring thresholds).

A clock judges only what can exist. Each asset records, when it writes, the newest value of its
clock (`fs_assets.metadata`), and the lag counts from the moment the first value after it was due:
- clean readings: `now - max(ts)`; pages past 15 minutes; and, while that passes, the same of the
  stalest site's newest reading (one gateway silent, `fs_assets.ingest.site_clock`);
- features, per window size: a window cannot be late before it closes, and its features are due
  when it closes; the lag is how long the first window after the newest one written has been
  closed, `now - (max(window_end) + size)`; warns past 30 minutes, pages past 45;
- the `Device` object (`device_objects`), two clocks judged in one check, so one stalled
  projection is one incident:
  - the newest 1-day window that could exist ends at the last midnight; its features are due 45
    minutes later (the features' alert), and the lag is how long past that the object still shows
    an older `features_window_end`; warns past 60 minutes, pages past 90;
  - the hourly projection, `now - hydrated_at`; pages past 90 minutes. Its 60-minute target is the
    hourly schedule's own bound: just before each hour's run finishes the snapshot is a run's
    length past it, so judging the target would warn every hour on a healthy store.
The online store's own projection age (what Redis serves) is `check_prehydration_lag`.

Why these and nothing else pages on these clocks: the run-based checks (the current partition
written within its SLA, Dagster's `build_last_update_freshness_checks`) judged the same lateness
a second time, and with no data today each fired its own page for one cause. Data time is the
design's rule and also catches runs that succeed on old data. The `FreshnessPolicy` on each asset
stays for the UI's freshness status: it emits no check evaluation, so the alert router never sees
it.

Reading: the newest value recorded over the latest materialization of today's partition and the
two days before (so just after midnight yesterday's windows still count and the new day's
partition is not "missing"; the day before yesterday holds yesterday's last 1-day window until
today's is written); for the `Device` object, its latest materialization. Nothing recorded in
that horizon is judged as at least that late. So a check reads the instance, not the tables: it
needs no Spark session, and its run takes seconds instead of holding a run slot for a JVM's start
and a Delta scan.

When to judge again (`fs_sensors.freshness_checks_sensor`): a pass carries
`dagster/fresh_until_timestamp`, when its lag could cross the threshold; a warning carries
`escalates_at_timestamp`, when it could page.
"""

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import dagster as dg

from fs_assets.features.touched import VERSION_KEY
from fs_assets.ingest.landing import partition_folder
from fs_assets.ingest.site_clock import LAGGING, LAGGING_SITES_KEY
from fs_assets.metadata import latest_key
from fs_checks.results import check_result
from fs_domain import slas
from fs_domain.device import DEVICE
from fs_domain.features import WINDOWS, WINDOWS_BY_MINUTES
from fs_domain.slas import Sla
from fs_domain.verdicts import Verdict, guide_section
from fs_resources.feature_store import FeatureStoreResource
from fs_resources.settings import landing_root

CHECK_DATA_FRESHNESS = "data_freshness_check"
# Metadata of a warning: when it can become a page, so the freshness sensor judges it again then.
ESCALATES_AT = "escalates_at_timestamp"
FRESH_UNTIL = "dagster/fresh_until_timestamp"
# Days of partitions read back: today, yesterday and the day before.
HORIZON_DAYS = 3

GUIDE_CLEAN = "Freshness: clean readings"
GUIDE_SITE = "Freshness: a silent site"
GUIDE_FEATURES = "Freshness: features"
GUIDE_DEVICE_OBJECT = "Freshness: the Device object"


@dataclass(frozen=True)
class DataClock:
    """One clock: the metadata key an asset records its newest data time under, the SLA it is held
    to, and when the first value after the newest one is due (`window` after it, for the next window
    to close, plus `waits_for`, what that value waits on upstream). `measures` says what its lag is;
    `advice` (with `{asset}` and `{landing}`, today's landing folder) and the operator guide's
    section `guide` say what to do when it fails. A clock `judged_while` another of the same asset
    counts only while that one passes: when both would fail, the other is the one cause."""

    name: str
    sla: Sla
    key: str
    measures: str
    advice: str
    guide: str
    partitioned: bool = True
    window: timedelta = timedelta(0)
    waits_for: timedelta = timedelta(0)
    judged_while: str | None = None

    def due(self, latest: datetime) -> datetime:
        return latest + self.window + self.waits_for

    def read(self, instance: dg.DagsterInstance, asset: str, now: datetime, version: str) -> "ClockReading | None":
        """The clock at `now`, from what `asset` recorded (None when it has nothing to judge)."""
        return read_clock(self, *recorded_latest(instance, dg.AssetKey(asset), self, now, version), now)

    def what_to_do(self, asset: str, now: datetime) -> str:
        landing = partition_folder(landing_root(), now.date())
        return f"{self.advice.format(asset=asset, landing=landing)} {guide_section(self.guide)}"


@dataclass(frozen=True)
class StalestSiteClock(DataClock):
    """Each site's newest reading, from the sites the clean runs recorded as lagging
    (`fs_assets.ingest.site_clock`): judged on the stalest one, and named after it."""

    def read(self, instance: dg.DagsterInstance, asset: str, now: datetime, version: str) -> "ClockReading | None":
        stalest = stalest_site(instance, now, version)
        if stalest is None:
            return None
        site, latest = stalest
        return ClockReading(replace(self, name=f"readings of {site}"), latest, latest, now)


@dataclass(frozen=True)
class ClockReading:
    """A clock judged at `now`: `lag` past `due` against the threshold of the severity it reaches."""

    clock: DataClock
    latest: datetime | None
    due: datetime
    now: datetime

    @property
    def lag(self) -> timedelta:
        return max(timedelta(0), self.now - self.due)

    @property
    def lag_minutes(self) -> float:
        """Rounded up to a tenth, so the figure shown fails exactly when the lag does."""
        return math.ceil(round(self.lag.total_seconds() / 6, 6)) / 10

    @property
    def severity(self) -> dg.AssetCheckSeverity:
        """ERROR past the alert; WARN past the target; a pass carries the severity it would fail with."""
        sla = self.clock.sla
        if self.lag > sla.alert or sla.target is None:
            return dg.AssetCheckSeverity.ERROR
        return dg.AssetCheckSeverity.WARN

    @property
    def limit(self) -> timedelta:
        """The threshold matching the severity: the alert past it (or with no target), else the target."""
        sla = self.clock.sla
        return sla.alert if self.lag > sla.alert or sla.target is None else sla.target

    @property
    def passed(self) -> bool:
        return self.lag <= self.limit

    @property
    def changes_at(self) -> datetime | None:
        """When the verdict can next get worse if nothing new is written (None once it pages)."""
        if self.passed:
            return self.due + self.limit
        return None if self.severity == dg.AssetCheckSeverity.ERROR else self.due + self.clock.sla.alert

    def verdict(self, asset: str, what_to_do: str) -> Verdict:
        return Verdict(
            observed=self.lag_minutes,
            threshold=self.limit.total_seconds() / 60,
            comparison="<=",
            unit="minutes",
            what_to_do=what_to_do,
            asset=asset,
        )

    def sentence(self) -> str:
        minutes = f"{self.lag_minutes:.0f} min"
        if self.latest is None:
            since = self.due - self.clock.window - self.clock.waits_for
            return f"{self.clock.name}: nothing newer than {since:%Y-%m-%d %H:%M} UTC recorded, at least {minutes} past due"
        if self.clock.window:
            closed = self.due - self.clock.waits_for
            state = f"due since {self.due:%H:%M}, {minutes} ago" if self.lag else "not due yet"
            return f"{self.clock.name}: newest {self.latest:%Y-%m-%d %H:%M} UTC; the window closing {closed:%Y-%m-%d %H:%M} UTC is {state}"
        return f"{self.clock.name}: newest {self.latest:%Y-%m-%d %H:%M} UTC, {minutes} ago"


ADVICE_FEATURES = "are clean readings fresh? Is feature_automation_sensor running, and did {asset}'s last run succeed?"
ADVICE_DEVICE_OBJECT = (
    "is prehydration_job running (prehydration_schedule, prehydration_sensor) and succeeding? Is device_features_1d fresh?"
)


def _feature_clock(minutes: int) -> DataClock:
    return DataClock(
        f"{WINDOWS_BY_MINUTES[minutes].suffix} windows",
        slas.FEATURES,
        latest_key("window_end"),
        measures="how long the first window after the newest one written has been closed",
        advice=ADVICE_FEATURES,
        guide=GUIDE_FEATURES,
        window=timedelta(minutes=minutes),
    )


CLEAN_CLOCK = DataClock(
    "clean readings",
    slas.CLEAN_READINGS,
    latest_key("ts"),
    measures="now - max(ts)",
    advice="is data arriving in the landing zone ({landing})? Is landing_zone_sensor running, and are clean_readings_job runs succeeding?",
    guide=GUIDE_CLEAN,
)
# One gateway silent while the others report, on the same SLA; the whole landing zone late is one cause.
SITE_CLOCK = StalestSiteClock(
    "readings of the stalest site",
    slas.CLEAN_READINGS,
    LAGGING_SITES_KEY,
    measures="while that passes, now - the newest reading of the stalest site",
    advice=(
        "one site stopped while the others report: is its gateway up and uploading? If its units are down as "
        "planned, declare the silence in landing/expected_gaps."
    ),
    guide=GUIDE_SITE,
    judged_while=CLEAN_CLOCK.name,
)
# The object shows the last complete 1-day window: it is due once the features of that window are.
NEWEST_DAY_WINDOW_CLOCK = DataClock(
    "newest 1-day window",
    slas.DEVICE_OBJECT,
    latest_key("features_window_end"),
    measures="how long past its due time (45 min after it closes) the newest 1-day window that could exist is missing",
    advice=ADVICE_DEVICE_OBJECT,
    guide=GUIDE_DEVICE_OBJECT,
    partitioned=False,
    window=timedelta(minutes=DEVICE.feature_window_minutes),
    waits_for=slas.FEATURES.alert,
)
HOURLY_PROJECTION_CLOCK = DataClock(
    "hourly projection",
    Sla(alert=slas.DEVICE_OBJECT.alert),
    "hydrated_at",
    measures="now - hydrated_at of the last projection",
    advice=ADVICE_DEVICE_OBJECT,
    guide=GUIDE_DEVICE_OBJECT,
    partitioned=False,
)

ASSET_CLOCKS: dict[str, tuple[DataClock, ...]] = {
    "clean_sensor_readings": (CLEAN_CLOCK, SITE_CLOCK),
    **{w.asset_name: (_feature_clock(w.minutes),) for w in WINDOWS},
    "device_objects": (NEWEST_DAY_WINDOW_CLOCK, HOURLY_PROJECTION_CLOCK),
}


# How long after the store starts an asset it has never written is judged: a fresh instance is
# catching up with its landing zone, not late. Each stage waits for the stages before it, so the
# grace adds up their alerts along the chain (clean readings, then features, then the object).
STARTUP_GRACE: dict[str, timedelta] = {
    "clean_sensor_readings": slas.CLEAN_READINGS.alert,
    **{w.asset_name: slas.CLEAN_READINGS.alert + slas.FEATURES.alert for w in WINDOWS},
    "device_objects": slas.CLEAN_READINGS.alert + slas.FEATURES.alert + slas.DEVICE_OBJECT.alert,
}


def horizon_start(now: datetime) -> datetime:
    """Midnight of the oldest day read back."""
    first = now.date() - timedelta(days=HORIZON_DAYS - 1)
    return datetime(first.year, first.month, first.day, tzinfo=UTC)


def horizon_days(now: datetime) -> list[str]:
    return [(now.date() - timedelta(days=d)).isoformat() for d in range(HORIZON_DAYS - 1, -1, -1)]


def read_clock(clock: DataClock, latest: datetime | None, recorded_none: bool, now: datetime) -> ClockReading:
    """The clock at `now`, from the newest value recorded (None when there is none).

    With nothing recorded the lag is a lower bound: a partitioned asset's newest value is older
    than the horizon; an object that shows no window at all is at least as late as one showing the
    window before the newest that could exist.
    """
    if latest is not None:
        latest = latest.replace(tzinfo=UTC) if latest.tzinfo is None else latest.astimezone(UTC)
        return ClockReading(clock, latest, clock.due(latest), now)
    if recorded_none and clock.window and not clock.partitioned:
        newest_closed = datetime.fromtimestamp(now.timestamp() // clock.window.total_seconds() * clock.window.total_seconds(), tz=UTC)
        return ClockReading(clock, None, clock.due(newest_closed - clock.window), now)
    return ClockReading(clock, None, clock.due(horizon_start(now)), now)


def judge(asset: str, readings: Sequence[ClockReading], context: dg.AssetCheckExecutionContext | None = None) -> dg.AssetCheckResult:
    """One result for the asset's clocks: the worst one decides (a page before a warning, then the
    furthest past its threshold); a pass names the clock that can fail first."""
    failing = [r for r in readings if not r.passed]
    if failing:
        deciding = max(failing, key=lambda r: (r.severity == dg.AssetCheckSeverity.ERROR, r.lag - r.limit))
    else:
        deciding = min(readings, key=lambda r: r.due + r.limit)
    now = deciding.now
    changes = [r.changes_at for r in readings if r.changes_at is not None]
    metadata: dict[str, object] = {
        "clock": deciding.clock.name,
        "lag_minutes": deciding.lag_minutes,
        "due_since": deciding.due.isoformat(),
        "newest": deciding.latest.isoformat() if deciding.latest else f"none since {horizon_start(now):%Y-%m-%d %H:%M} UTC",
        "alert_minutes": deciding.clock.sla.alert.total_seconds() / 60,
    }
    if deciding.clock.sla.target:
        metadata["target_minutes"] = deciding.clock.sla.target.total_seconds() / 60
    if deciding.latest:
        metadata["dagster/last_updated_timestamp"] = dg.MetadataValue.timestamp(deciding.latest.timestamp())
    if len(readings) > 1:
        metadata["clocks"] = dg.MetadataValue.json(
            {
                r.clock.name: {"lag_minutes": r.lag_minutes, "threshold_minutes": r.limit.total_seconds() / 60, "passed": r.passed}
                for r in readings
            }
        )
    if not failing:
        metadata[FRESH_UNTIL] = dg.MetadataValue.timestamp(min(changes).timestamp())
    elif deciding.severity == dg.AssetCheckSeverity.WARN and changes:
        metadata[ESCALATES_AT] = dg.MetadataValue.timestamp(min(changes).timestamp())
    verdict = deciding.verdict(asset, deciding.clock.what_to_do(asset, now))
    others = "; ".join(r.sentence() for r in readings if r is not deciding)
    description = f"{deciding.sentence()}: {verdict.sentence()}" + (f" ({others})" if others else "")
    return check_result(
        verdict,
        context=context,
        severity=deciding.severity,
        description=description,
        metadata=metadata,
        asset_key=dg.AssetKey(asset),
        check_name=CHECK_DATA_FRESHNESS,
    )


def _recorded_metadata(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None, version: str) -> dict | None:
    """The metadata of the latest materialization (of `partition`) that wrote `version` (or carries no version)."""
    filters = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None)
    # A partition's latest materialization is the one that counts; an unpartitioned object's table
    # is per version, so a run of another version does not replace this one's.
    for record in instance.fetch_materializations(filters, limit=1 if partition else 20).records:
        md = record.asset_materialization.metadata if record.asset_materialization else {}
        if VERSION_KEY not in md or md[VERSION_KEY].value == version:
            return md
        if partition:
            return None
    return None


def _as_time(value: object) -> datetime | None:
    value = getattr(value, "value", value)
    if value is None or value == "none":
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=UTC)
    return datetime.fromisoformat(str(value))


def recorded_latest(
    instance: dg.DagsterInstance, key: dg.AssetKey, clock: DataClock, now: datetime, version: str
) -> tuple[datetime | None, bool]:
    """The newest value of `clock` the asset recorded (over the horizon's partitions when
    partitioned), and whether it recorded "none" instead (it wrote, but held no value)."""
    latest, recorded_none = None, False
    for partition in horizon_days(now) if clock.partitioned else [None]:
        md = _recorded_metadata(instance, key, partition, version)
        if md is None or clock.key not in md:
            continue
        value = _as_time(md[clock.key])
        if value is None:
            recorded_none = True
            continue
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        latest = value if latest is None or value > latest else latest
    return latest, recorded_none and latest is None


def stalest_site(instance: dg.DagsterInstance, now: datetime, version: str) -> tuple[str, datetime] | None:
    """The site whose newest clean reading is the oldest, and that reading, from the sites the clean
    runs recorded as lagging (`fs_assets.ingest.site_clock`) over the horizon's partitions.

    A site not listed by a partition's latest run was within `LAGGING` of that run's newest reading;
    one listed as "none" had no reading in that day; each site counts its newest over the partitions."""
    newest: dict[str, datetime] = {}
    listed: set[str] = set()
    recorded: list[tuple[datetime, dict]] = []
    for partition in horizon_days(now):
        md = _recorded_metadata(instance, dg.AssetKey("clean_sensor_readings"), partition, version)
        fleet = _as_time(md.get(CLEAN_CLOCK.key)) if md else None
        if md is None or fleet is None or LAGGING_SITES_KEY not in md:
            continue
        lagging = dict(md[LAGGING_SITES_KEY].value or {})
        day_start = datetime.fromisoformat(partition).replace(tzinfo=UTC)
        recorded.append((fleet.astimezone(UTC) if fleet.tzinfo else fleet.replace(tzinfo=UTC), lagging))
        for site, at in lagging.items():
            value = _as_time(at) or day_start
            value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
            newest[site] = max(value, newest.get(site, value))
            listed.add(site)
    for fleet, lagging in recorded:
        for site in listed - set(lagging):
            newest[site] = max(newest[site], fleet - LAGGING)
    if not newest:
        return None
    site = min(newest, key=lambda s: (newest[s], s))
    return site, newest[site]


def evaluate(
    instance: dg.DagsterInstance, asset: str, now: datetime, version: str, context: dg.AssetCheckExecutionContext | None = None
) -> dg.AssetCheckResult:
    """The data freshness of `asset` at `now`, from what it recorded (the run judging it from `context`)."""
    readings: dict[str, ClockReading] = {}
    for clock in ASSET_CLOCKS[asset]:
        if clock.judged_while and not readings[clock.judged_while].passed:
            continue
        if (reading := clock.read(instance, asset, now, version)) is not None:
            readings[clock.name] = reading
    return judge(asset, list(readings.values()), context)


def _spec_description(asset: str) -> str:
    def limits(clock: DataClock) -> str:
        alert = f"pages past {clock.sla.alert.total_seconds() / 60:.0f} min"
        return f"warns past {clock.sla.target.total_seconds() / 60:.0f} min, {alert}" if clock.sla.target else alert

    parts = [f"{clock.measures}: {limits(clock)}" for clock in ASSET_CLOCKS[asset]]
    return "Data time. " + "; ".join(parts) + "."


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec(CHECK_DATA_FRESHNESS, asset=asset, description=_spec_description(asset)) for asset in ASSET_CLOCKS],
    can_subset=True,
    name="data_time_freshness_checks",
)
def data_time_freshness_checks(context: dg.AssetCheckExecutionContext, feature_store: FeatureStoreResource):
    now = datetime.fromtimestamp(time.time(), tz=UTC)
    version = feature_store.version()
    for check_key in context.selected_asset_check_keys:
        yield evaluate(context.instance, check_key.asset_key.to_user_string(), now, version, context)
