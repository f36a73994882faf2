"""Freshness: a clock judges only what can exist, a healthy store never fails at any minute of the
day, a stalled stage pages within its alert threshold and one sensor tick, and one check per
clock can page."""

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

from fs_checks.data_freshness_checks import (
    ASSET_CLOCKS,
    CHECK_DATA_FRESHNESS,
    ESCALATES_AT,
    FRESH_UNTIL,
    data_time_freshness_checks,
    evaluate,
    recorded_latest,
)
from fs_checks.freshness_checks import CHECK_FRESHNESS, completed_day_freshness, completed_day_freshness_checks
from fs_domain import slas
from fs_domain.features import WINDOWS
from fs_domain.verdicts import Verdict, guide_section
from fs_resources.feature_store import FeatureStoreResource
from fs_sensors.freshness_checks_sensor import SENSOR_INTERVAL_SECONDS, LastVerdict, due, freshness_checks_sensor, judged_yet

ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN
MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)
TICK = timedelta(seconds=SENSOR_INTERVAL_SECONDS)
CLEAN = "clean_sensor_readings"
OBJECTS = "device_objects"
JUDGED = list(ASSET_CLOCKS)
# The day swept: its midnight and the hours around it are where clocks used to go wrong.
SWEPT = date(2026, 1, 5)


def at(day: date, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=UTC)


def floor(t: datetime, size: timedelta) -> datetime:
    return datetime.fromtimestamp(t.timestamp() // size.total_seconds() * size.total_seconds(), tz=UTC)


@dataclass(frozen=True)
class Write:
    at: datetime
    asset: str
    partition: str | None
    metadata: dict


@dataclass
class Store:
    """A store's writes as its assets make them: a landing file every 5 minutes (readings up to 30 s
    before), its clean run done 3 minutes later, the three feature sizes 3 minutes after that (each
    partition recording its newest closed window, or "none"), `device_objects` every hour (hydrated
    30 s past the hour, written 3 minutes later) and after each new 1-day window. A stage listed in
    `stalled` writes nothing from its time on."""

    start: datetime
    end: datetime
    stalled: dict[str, datetime] = field(default_factory=dict)

    def _runs(self, stage: str, when: datetime) -> bool:
        return stage not in self.stalled or when < self.stalled[stage]

    def writes(self) -> list[Write]:
        out: list[Write] = []
        newest_day_window: list[tuple[datetime, datetime]] = []  # (written at, window end)
        t = self.start
        while t <= self.end:
            if self._runs("landing", t):
                newest_ts = t - timedelta(seconds=30)
                days = sorted({(t - 5 * MINUTE).date(), newest_ts.date()})
                for day in days:
                    out.append(Write(t + 3 * MINUTE, CLEAN, day.isoformat(), {"latest_ts": newest_ts.isoformat()}))
                for window in WINDOWS:
                    written_at = t + 6 * MINUTE
                    if not self._runs(window.asset_name, written_at):
                        continue
                    size = timedelta(minutes=window.minutes)
                    for day in days:
                        newest_end = min(floor(t, size), at(day) + DAY)
                        value = newest_end.isoformat() if newest_end - size >= at(day) else "none"
                        md = {"latest_window_end": value, "feature_set_version": "v1"}
                        out.append(Write(written_at, window.asset_name, day.isoformat(), md))
                        if window.minutes == 1440 and value != "none":
                            newest_day_window.append((written_at, newest_end))
            t += 5 * MINUTE
        first = floor(self.start, timedelta(hours=1))
        projections = [first + timedelta(hours=h) for h in range(int((self.end - first) / timedelta(hours=1)) + 1)]
        projections += [written + MINUTE for written, _ in newest_day_window]
        for started in sorted(projections):
            hydrated = started + timedelta(seconds=30)
            if not self._runs(OBJECTS, started) or not self.start <= started <= self.end:
                continue
            shown = [end for written, end in newest_day_window if written <= hydrated]
            md = {
                "latest_features_window_end": max(shown).isoformat() if shown else "none",
                "hydrated_at": hydrated.isoformat(),
                "feature_set_version": "v1",
            }
            out.append(Write(started + 3 * MINUTE, OBJECTS, None, md))
        return sorted(out, key=lambda w: w.at)


class Replay:
    """Replays a store's writes into a real Dagster instance as time moves forward."""

    def __init__(self, store: Store, *assets: str):
        self.instance = dg.DagsterInstance.ephemeral()
        self.pending = [w for w in store.writes() if not assets or w.asset in assets]
        self.last_written: dict[str, datetime] = {}

    def until(self, now: datetime) -> None:
        while self.pending and self.pending[0].at <= now:
            w = self.pending.pop(0)
            self.instance.report_runless_asset_event(dg.AssetMaterialization(w.asset, partition=w.partition, metadata=w.metadata))
            self.last_written[w.asset] = w.at

    def judge(self, asset: str, now: datetime) -> dg.AssetCheckResult:
        self.until(now)
        return evaluate(self.instance, asset, now, "v1")


def shape(result: dg.AssetCheckResult) -> Verdict:
    verdict = Verdict.from_metadata(result.metadata)
    assert verdict is not None, result.metadata
    assert verdict.unit == "minutes" and verdict.comparison == "<=" and isinstance(verdict.observed, float)
    assert verdict.holds == result.passed, result.description
    return verdict


def threshold_for(asset: str, severity: dg.AssetCheckSeverity, clock_name: str) -> float:
    (clock,) = [c for c in ASSET_CLOCKS[asset] if c.name == clock_name]
    limit = clock.sla.alert if severity == ERROR or clock.sla.target is None else clock.sla.target
    return limit.total_seconds() / 60


# Writes from the day before the one swept: its partitions and the 1-day window it closes are read back.
HISTORY = at(SWEPT) - DAY - 5 * MINUTE


@pytest.mark.unit
def test_a_healthy_store_never_fails_at_any_minute_of_the_day():
    """Every 5 minutes over a whole day and past the next midnight, every clock; the minute within
    the 5 moves on each step, so each phase of the writes' 5-minute cycle is judged at every hour."""
    replay = Replay(Store(HISTORY, at(SWEPT) + DAY + timedelta(hours=1)))
    step = 0
    failures = []
    while (now := at(SWEPT) + step * 5 * MINUTE + (step % 5) * MINUTE) <= at(SWEPT) + DAY + timedelta(minutes=30):
        step += 1
        for asset in JUDGED:
            result = replay.judge(asset, now)
            verdict = shape(result)
            assert verdict.threshold == threshold_for(asset, result.severity, result.metadata["clock"].value)
            if not result.passed:
                failures.append(f"{now:%H:%M} {asset}: {result.description}")
            else:
                assert result.metadata[FRESH_UNTIL].value > now.timestamp() - 1
    assert failures == [], failures[:10]


@pytest.mark.unit
def test_the_device_object_of_a_healthy_store_passes_when_it_used_to_page():
    """The object serves the 1-day window ending at the last midnight: at 01:12 and 02:00 that window
    is the newest that can exist, so nothing is late (it used to warn from 01:00 and page from 01:30)."""
    replay = Replay(Store(HISTORY, at(SWEPT) + timedelta(hours=3)), OBJECTS)
    for hour, minute in [(0, 30), (1, 12), (2, 0), (2, 59)]:
        result = replay.judge(OBJECTS, at(SWEPT, hour, minute))
        assert result.passed, result.description
        clocks = result.metadata["clocks"].value
        assert clocks["newest 1-day window"]["lag_minutes"] == 0.0


def first_page(
    store: Store, asset: str, since: datetime, until: datetime
) -> tuple[datetime | None, list[tuple[datetime, dg.AssetCheckResult]]]:
    """When the freshness sensor, ticking every interval from `since`, first has `asset`'s check
    fail at ERROR, judging it only when `due` says so; and every verdict it got on the way."""
    replay = Replay(store, asset)
    last: LastVerdict | None = None
    verdicts = []
    now = since
    while now <= until:
        replay.until(now)
        written = replay.last_written.get(asset)
        if due(last, False, written.timestamp() if written else None, now.timestamp()):
            result = replay.judge(asset, now)
            shape(result)
            verdicts.append((now, result))
            md = result.metadata
            last = LastVerdict(
                result.passed,
                now.timestamp(),
                md[FRESH_UNTIL].value if FRESH_UNTIL in md else None,
                md[ESCALATES_AT].value if ESCALATES_AT in md else None,
            )
            if not result.passed and result.severity == ERROR:
                return now, verdicts
        now += TICK
    return None, verdicts


# Stall moments: just after midnight, just before an hour boundary, just before midnight.
STALLS = [at(SWEPT, 0, 1), at(SWEPT, 9, 58), at(SWEPT, 23, 59)]


@pytest.mark.unit
@pytest.mark.parametrize("stalled_at", STALLS, ids=lambda t: f"{t:%H%M}")
@pytest.mark.parametrize("stage, asset", [("landing", CLEAN), *[(w.asset_name, w.asset_name) for w in WINDOWS], (OBJECTS, OBJECTS)])
def test_a_stalled_stage_pages_within_its_alert_and_one_sensor_tick(stage, asset, stalled_at):
    store = Store(HISTORY, stalled_at + 2 * DAY, stalled={stage: stalled_at})
    writes = [w for w in store.writes() if w.asset == asset and w.at <= stalled_at + 10 * MINUTE]
    (clock,) = [c for c in ASSET_CLOCKS[asset] if c.name != "newest 1-day window" and not c.judged_while]
    newest = max(datetime.fromisoformat(w.metadata[clock.key]) for w in writes if w.metadata[clock.key] != "none")
    breach = clock.due(newest) + clock.sla.alert  # the newest value written before the stall, and its SLA
    paged, verdicts = first_page(store, asset, stalled_at - timedelta(hours=1), breach + timedelta(hours=1))
    assert paged is not None, [(t.isoformat(), r.description) for t, r in verdicts[-3:]]
    assert breach <= paged <= breach + TICK, (breach, paged)
    page = verdicts[-1][1]
    assert shape(page).threshold == clock.sla.alert.total_seconds() / 60
    assert shape(page).observed > shape(page).threshold
    # Judged a handful of times, not every tick.
    assert len(verdicts) <= (paged - stalled_at + timedelta(hours=1)) / timedelta(minutes=5) + 4, len(verdicts)


@pytest.mark.unit
def test_the_device_object_missing_the_midnight_window_warns_then_pages_after_the_features_would():
    """The last midnight's window is due in the features 45 min after it closes, and in the object
    60 min (warn) / 90 min (page) after that; the hourly projection goes on meanwhile."""
    midnight = at(SWEPT) + DAY
    store = Store(HISTORY, midnight + timedelta(hours=4), stalled={"device_features_1d": midnight - timedelta(hours=1)})
    paged, verdicts = first_page(store, OBJECTS, midnight - timedelta(hours=1), midnight + timedelta(hours=4))
    due_at = midnight + slas.FEATURES.alert
    assert due_at + slas.DEVICE_OBJECT.alert <= paged <= due_at + slas.DEVICE_OBJECT.alert + TICK
    warned = [t for t, r in verdicts if not r.passed and r.severity == WARN]
    assert warned and due_at + slas.DEVICE_OBJECT.target <= warned[0] <= due_at + slas.DEVICE_OBJECT.target + TICK
    page = verdicts[-1][1]
    assert page.metadata["clock"].value == "newest 1-day window" and shape(page).threshold == 90.0
    # The 1-day features' own clock pages first (the object's page follows from it).
    features_paged, _ = first_page(store, "device_features_1d", midnight - timedelta(hours=1), midnight + timedelta(hours=2))
    assert features_paged is not None and features_paged < warned[0]


@pytest.mark.unit
def test_data_time_is_the_newest_recorded_over_the_horizon_for_the_current_version():
    instance = dg.DagsterInstance.ephemeral()
    (clock,) = ASSET_CLOCKS["device_features_15m"]
    key = dg.AssetKey("device_features_15m")
    now = at(date(2026, 1, 5), 9, 40)

    def written(day: str, latest: str, version: str = "v1") -> None:
        metadata = {"latest_window_end": latest, "feature_set_version": version}
        instance.report_runless_asset_event(dg.AssetMaterialization("device_features_15m", partition=day, metadata=metadata))

    assert recorded_latest(instance, key, clock, now, "v1") == (None, False)
    written("2026-01-05", "2026-01-05T09:00:00")
    written("2026-01-04", "2026-01-05T00:00:00")  # a late file for yesterday, written after today's run
    written("2026-01-05", "2026-01-05T09:15:00", version="v2")  # another feature set version's table
    written("2026-01-02", "2026-01-05T12:00:00")  # not one of the three days
    # Today's latest materialization wrote v2's table: v1's newest is yesterday's.
    assert recorded_latest(instance, key, clock, now, "v1")[0] == datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
    written("2026-01-05", "2026-01-05T09:30:00")
    assert recorded_latest(instance, key, clock, now, "v1")[0] == datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
    written("2026-01-05", "none")  # a run that found no closed window: yesterday's still counts
    assert recorded_latest(instance, key, clock, now, "v1")[0] == datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
    written("2026-01-03", "2026-01-04T00:00:00")  # the day before yesterday is in the horizon
    written("2026-01-04", "2026-01-04T23:45:00", version="v2")
    assert recorded_latest(instance, key, clock, now, "v1")[0] == datetime(2026, 1, 4, 0, 0, tzinfo=UTC)


@pytest.mark.unit
def test_each_clock_states_its_lag_against_the_threshold_of_its_severity():
    instance = dg.DagsterInstance.ephemeral()

    def written(asset: str, partition: str | None, **metadata) -> None:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset, partition=partition, metadata=metadata | {"feature_set_version": "v1"})
        )

    now = at(date(2026, 1, 5), 12, 50)
    written(CLEAN, "2026-01-05", latest_ts="2026-01-05T12:30:00")
    late = evaluate(instance, CLEAN, now, "v1")
    assert not late.passed and late.severity == ERROR
    assert (shape(late).observed, shape(late).threshold) == (20.0, 15.0)
    assert "landing zone" in shape(late).what_to_do and "landing_zone_sensor" in shape(late).what_to_do
    # Written up to 12:00: the 12:00-12:15 window closed 35 min ago (past the 30-min target, within the 45-min alert).
    written("device_features_15m", "2026-01-05", latest_window_end="2026-01-05T12:00:00")
    warn = evaluate(instance, "device_features_15m", now, "v1")
    assert not warn.passed and warn.severity == WARN and (shape(warn).observed, shape(warn).threshold) == (35.0, 30.0)
    assert warn.metadata[ESCALATES_AT].value == at(date(2026, 1, 5), 13, 0).timestamp()
    written("device_features_15m", "2026-01-05", latest_window_end="2026-01-05T12:30:00")
    fresh = evaluate(instance, "device_features_15m", now, "v1")
    assert fresh.passed and fresh.metadata[FRESH_UNTIL].value == at(date(2026, 1, 5), 13, 15).timestamp()
    # The 1-day window of a day in progress is not late: yesterday's, written, is the newest that can be.
    written("device_features_1d", "2026-01-04", latest_window_end="2026-01-05T00:00:00")
    assert evaluate(instance, "device_features_1d", now, "v1").passed
    # Never projected: both of the object's clocks are at least the horizon late.
    never = evaluate(instance, OBJECTS, now, "v1")
    assert not never.passed and never.severity == ERROR and shape(never).observed > 90
    # Projected 100 minutes ago, showing the last midnight's window: the hourly projection pages.
    written(OBJECTS, None, latest_features_window_end="2026-01-05T00:00:00", hydrated_at="2026-01-05T11:10:00+00:00")
    stalled = evaluate(instance, OBJECTS, now, "v1")
    assert not stalled.passed and stalled.severity == ERROR and stalled.metadata["clock"].value == "hourly projection"
    assert (shape(stalled).observed, shape(stalled).threshold) == (100.0, 90.0)


@pytest.mark.unit
def test_daily_monitoring_is_due_the_complete_day_before_the_three_oclock_deadline():
    with dg.instance_for_test() as instance:

        def materialized(partition: str) -> None:
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="anomaly_scores", partition=partition))

        now = time.time()
        # The day before the date of (now - 3 h): at 02:00 on the 10th the 8th is due, at 04:00 the 9th.
        due_day = (datetime.fromtimestamp(now, tz=UTC) - timedelta(hours=3)).date() - timedelta(days=1)
        missing = completed_day_freshness(instance, "anomaly_scores", now)
        assert not missing.passed and missing.severity == WARN
        assert shape(missing).threshold == 180.0 and shape(missing).observed > 180.0
        assert shape(missing).partition == due_day.isoformat()
        materialized((due_day + timedelta(days=1)).isoformat())  # today's unfinished day does not count
        assert not completed_day_freshness(instance, "anomaly_scores", time.time()).passed
        materialized(due_day.isoformat())
        result = completed_day_freshness(instance, "anomaly_scores", time.time())
        assert result.passed and shape(result).observed == 0.0 and FRESH_UNTIL in result.metadata, result.description


@pytest.mark.unit
def test_the_sensor_judges_again_only_when_a_verdict_can_have_changed():
    now = 1_000_000.0
    assert due(None, False, None, now)
    assert not due(None, True, None, now)  # being evaluated
    assert not due(LastVerdict(True, now - 60, fresh_until=now + 60), False, now - 10, now)  # a write does not make it late
    assert due(LastVerdict(True, now - 60, fresh_until=now - 1), False, None, now)
    assert not due(LastVerdict(False, now - 60, escalates_at=now + 60), False, now - 120, now)
    assert due(LastVerdict(False, now - 60, escalates_at=now - 1), False, None, now)  # a warning that can page now
    assert due(LastVerdict(False, now - 60), False, now - 10, now)  # written since it failed: it can have recovered
    assert not due(LastVerdict(False, now - 60), False, now - 120, now)  # a page stays until something is written


@pytest.mark.unit
def test_a_fresh_store_is_catching_up_not_late():
    """`make run` on a fresh clone: nothing written yet is judged only after its grace, which adds up
    the alerts upstream of it; the daily monitoring assets owe nothing before their first write."""
    started = 1_000_000.0
    # Written during the grace is the backlog's oldest days: not judged yet either.
    assert not judged_yet(CLEAN, True, started, started + 60)
    assert judged_yet("anomaly_scores", True, started, started)
    assert not judged_yet(CLEAN, False, started, started + 14 * 60)
    assert judged_yet(CLEAN, False, started, started + 15 * 60)
    assert not judged_yet("device_features_15m", False, started, started + 59 * 60)
    assert judged_yet("device_features_15m", False, started, started + 60 * 60)
    assert not judged_yet(OBJECTS, False, started, started + 149 * 60)
    assert judged_yet(OBJECTS, False, started, started + 150 * 60)
    assert not judged_yet("anomaly_scores", False, started, started + 7 * 24 * 3600)


@pytest.mark.integration
def test_the_checks_run_in_dagster_and_the_sensor_requests_what_is_due():
    assets = [dg.AssetSpec(a) for a in (*ASSET_CLOCKS, "anomaly_scores", "feature_drift_report")]
    checks = [data_time_freshness_checks, completed_day_freshness_checks]
    resources = {"feature_store": FeatureStoreResource()}
    defs = dg.Definitions(assets=assets, asset_checks=checks, sensors=[freshness_checks_sensor], resources=resources)
    with dg.instance_for_test() as instance:
        now = datetime.now(UTC)
        instance.report_runless_asset_event(
            dg.AssetMaterialization(CLEAN, partition=now.date().isoformat(), metadata={"latest_ts": (now - MINUTE).isoformat()})
        )
        # A fresh store is catching up: nothing is judged during its start-up grace, written or not;
        # once the grace has passed, every data clock is.
        fresh = freshness_checks_sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        assert isinstance(fresh, dg.SkipReason)

        def started_long_ago():
            return dg.build_sensor_context(instance=instance, definitions=defs, cursor=json.dumps({"started": 0}))

        request = freshness_checks_sensor(started_long_ago())
        assert {k.asset_key.to_user_string() for k in request.asset_check_keys} == set(ASSET_CLOCKS)

        result = dg.materialize(
            [*assets, *checks], selection=dg.AssetSelection.checks(*checks), instance=instance, resources=resources, raise_on_error=False
        )
        evaluations = {e.asset_key.to_user_string(): e for e in result.get_asset_check_evaluations()}
        assert {a: e.passed for a, e in evaluations.items()} == {
            CLEAN: True,
            **{w.asset_name: False for w in WINDOWS},
            OBJECTS: False,
            "anomaly_scores": False,
            "feature_drift_report": False,
        }
        for evaluation in evaluations.values():
            verdict = Verdict.from_metadata(evaluation.metadata)
            assert verdict is not None and verdict.run_id == result.run_id and verdict.asset, evaluation.metadata
        # Judged: the passing check waits for its fresh-until time, the failing ones for a write.
        assert isinstance(freshness_checks_sensor(started_long_ago()), dg.SkipReason)
        instance.report_runless_asset_event(dg.AssetMaterialization("device_features_15m", partition=now.date().isoformat()))
        request = freshness_checks_sensor(started_long_ago())
        assert [k.to_user_string() for k in request.asset_check_keys] == [f"device_features_15m:{CHECK_DATA_FRESHNESS}"]


@pytest.mark.unit
def test_one_freshness_check_per_asset_and_clock_can_page():
    """Clean readings, features and the Device object are judged by data time alone; the run-based
    checks that judged the same lateness a second time are gone."""
    from definitions import defs

    repo = defs.get_repository_def()
    freshness = {}
    for key in repo.asset_graph.asset_check_keys:
        if key.name in (CHECK_DATA_FRESHNESS, CHECK_FRESHNESS):
            freshness.setdefault(key.asset_key.to_user_string(), []).append(key.name)
    assert freshness == {
        **{asset: [CHECK_DATA_FRESHNESS] for asset in JUDGED},
        "anomaly_scores": [CHECK_FRESHNESS],
        "feature_drift_report": [CHECK_FRESHNESS],
    }


@pytest.mark.unit
def test_every_freshness_what_to_do_points_at_a_section_of_the_operator_guide():
    from pathlib import Path

    from fs_checks import freshness_checks

    headings = {
        line.lstrip("#").strip()
        for line in (Path(__file__).resolve().parents[1] / "docs" / "operator_guide.md").read_text().splitlines()
        if line.startswith("#")
    }
    titles = {clock.guide for clocks in ASSET_CLOCKS.values() for clock in clocks} | {freshness_checks.GUIDE_MONITORING}
    assert len(titles) == 5 and titles <= headings, titles - headings
    now = datetime.now(UTC)
    for asset, clocks in ASSET_CLOCKS.items():
        for clock in clocks:
            advice = clock.what_to_do(asset, now)
            assert advice.endswith(guide_section(clock.guide)) and "{" not in advice, advice


@pytest.mark.unit
def test_one_silent_site_pages_on_the_clean_readings_sla_and_a_late_landing_zone_is_one_cause():
    instance = dg.DagsterInstance.ephemeral()
    today, yesterday = date(2026, 1, 5), date(2026, 1, 4)

    def clean_run(day: date, newest: str, lagging: dict[str, str]) -> None:
        metadata = {"latest_ts": newest, "lagging_sites": dg.MetadataValue.json(lagging)}
        instance.report_runless_asset_event(dg.AssetMaterialization(CLEAN, partition=day.isoformat(), metadata=metadata))

    # Yesterday every site reported to the end; today site-0002 stopped after 13:14 while the fleet went on.
    clean_run(yesterday, "2026-01-04T23:59:00", {})
    clean_run(today, "2026-01-05T13:27:00", {"site-0002": "2026-01-05T13:14:00"})
    before = evaluate(instance, CLEAN, at(today, 13, 28), "v1")
    # Passing, it asks to be judged again when the site's silence reaches the SLA, not the fleet's.
    assert before.passed and before.metadata[FRESH_UNTIL].value == at(today, 13, 29).timestamp()
    clean_run(today, "2026-01-05T13:29:00", {"site-0002": "2026-01-05T13:14:00"})
    silent = evaluate(instance, CLEAN, at(today, 13, 30), "v1")
    verdict = shape(silent)
    assert not silent.passed and silent.severity == ERROR and (verdict.observed, verdict.threshold) == (16.0, 15.0)
    assert silent.description.startswith("readings of site-0002: newest 2026-01-05 13:14 UTC") and "gateway" in verdict.what_to_do
    assert silent.metadata["clock"].value == "readings of site-0002"
    # Through the alert router's own rule: one page naming the site, with its value and threshold.
    from fs_sensors.alert_routing_sensor import Incidents, Lineage, RoutingState, RunFacts, _evaluation_alerts

    evaluation = dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(CLEAN), check_name=CHECK_DATA_FRESHNESS, passed=False, metadata=silent.metadata,
        severity=ERROR, description=silent.description,
    )  # fmt: skip
    facts = RunFacts(dg.DagsterRun(job_name="checks", run_id="r"), "checks", set(), None, time.time(), time.time())
    (page,) = [
        a for a in _evaluation_alerts(Incidents(RoutingState(None), Lineage(None)), facts, time.time(), evaluation) if a.action == "trigger"
    ]
    assert (page.observed, page.threshold) == (16.0, 15.0) and "site-0002" in page.summary and "expected <= 15" in page.summary

    # The whole landing zone late: that is the cause the page names, not the site that was already silent.
    stopped = evaluate(instance, CLEAN, at(today, 13, 50), "v1")
    assert not stopped.passed and stopped.metadata["clock"].value == "clean readings"
    assert shape(stopped).observed == 21.0 and "site-0002" not in stopped.description

    # The site reports again: the next run lists nothing, and the site is as fresh as the fleet.
    clean_run(today, "2026-01-05T13:51:00", {})
    assert evaluate(instance, CLEAN, at(today, 13, 52), "v1").passed
    # A site with no reading in today's partition counts from today's start at most.
    clean_run(today, "2026-01-05T00:20:00", {"site-0003": "none"})
    early = evaluate(instance, CLEAN, at(today, 0, 21), "v1")
    assert not early.passed and early.metadata["clock"].value == "readings of site-0003" and shape(early).observed == 21.0
