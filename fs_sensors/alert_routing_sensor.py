"""`alert_routing_sensor`: asset-check evaluations and run failures, routed to a person, one incident per root cause.

Reading. A failed asset check does not fail its run, so run-failure sensors never see it; this
sensor reads the check evaluations of every run that finished since its cursor
(`get_records_for_run`: a global cursor over check events is not reliable on the default SQLite
storage, whose event ids restart per run). Run records are read page by page, through any number
of pages already seen (bounded per tick); a run that cannot be read is set aside, never the cursor.

What an alert says. Every check result carries the one shape of `fs_domain.verdicts` (observed,
threshold, comparison, unit, what to do); the router reads that shape and nothing else. A failing
result without it still alerts, saying plainly that the check recorded no value or threshold.

Incidents. A failing check (keyed check | asset | partition) or a failed run (keyed by its job,
assets and partition; a run failed by a blocking ERROR check is that check's incident) either
opens an incident or attaches to an open incident of its route that explains it: one on the same
asset, on an asset upstream of it in the code location's asset graph, or of the same check on a
sibling asset (the same inputs: the three feature sizes). Only within a route: an ML incident
(drift) causes no pipeline failure, and a page to data engineering tells the ML channel nothing.
An attached failure sends nothing of its own, not even a low-urgency note (a stream of notes is
what on-call wants to be rid of, and each would open an incident at the sink to be resolved): it is
context that its incident's later alerts carry (`Alert.attached`), so a stalled upstream is one
page, not one per asset it feeds. An incident sends one trigger when it opens and one more only
when it (or a failure attached to it) rises from WARN to ERROR; what pages is decided once, in
`fs_resources.alerts.urgency_for`. It resolves once, when its own cause passes, saying how long it
lasted.

When an incident resolves, the failures attached to it are held for `RECOVERY_GRACE`, the time a
recovery takes to flow down the graph: those that clear meanwhile were the incident's and send
nothing. One still failing after it, or failing again in a run that recomputed its asset after the
recovery, was not caused by the incident after all and opens an incident of its own; the most
upstream one first, so the rest attach to it. A new failure downstream of a recovery in progress
is held the same way. A recovery therefore never sets off a storm, and no failure is dropped.

A stalled queue. Runs waiting in the queue while nothing runs are waiting for something that will
not come (a table's pool slot still held by a run that was killed, run limits set to 0): past
`QUEUE_STALLED` of that, watched by this sensor (not counted across a daemon restart, whose queue
moves at once), one incident of its own pages, naming the oldest waiting run, and resolves
once something runs or the queue is empty. It attaches to nothing and nothing attaches to it: a
killed run's failure and the stall behind it are two causes, each with its own fix.

Routes: drift (`check_feature_drift`) and score confidence go to the ML channel; everything else
to data engineering on-call. Never to maintenance operators.

Delivery. Alerts wait in one queue per destination (`AlertSinkResource.destination`), in order,
and the destinations are served side by side within the tick's time budget: a slow, refusing or
unreachable webhook holds back only its own queue. Alerts a sink could not take stay queued in the
cursor for the next tick; an alert the sink refuses for good is set aside in the dead-letter file
and announced by an alert of its own. A sink that takes nothing for minutes, also one with nothing
to deliver (it is probed), pages once through another sink (`fs_sensors.alert_sink_watch`). A heartbeat is written only when a tick finished its work
(read every run it should and reached every destination's sink), and `alert_path_self_test_job`
pages when it goes stale.
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta

import dagster as dg

from fs_checks.data_freshness_checks import CHECK_DATA_FRESHNESS
from fs_checks.drift_checks import CHECK_FEATURE_DRIFT
from fs_checks.score_checks import CHECK_SCORE_CONFIDENCE, CHECK_SITE_ANOMALIES
from fs_domain import slas
from fs_domain.run_limits import QUEUE_STALLED
from fs_domain.verdicts import Verdict, guide_section
from fs_resources.alerts import ROUTE_DATA_ENGINEERING, ROUTE_ML, Alert, AlertSinkResource, Outcome, urgency_for
from fs_sensors.alert_sink_watch import Contact, SinkWatch

# What a model's owners act on: drift (a fleet's, or a site's seen in its scores), and scores
# resting on inputs they should not trust.
ML_CHECKS = frozenset({CHECK_FEATURE_DRIFT, CHECK_SCORE_CONFIDENCE, CHECK_SITE_ANOMALIES})
SELF_TEST_JOB = "alert_path_self_test_job"
CHECK_RUN_FAILURE = "run_failure"
# Checks whose failures are routed only from runs that materialize nothing (see `_run_alerts`).
CLOCK_CHECKS = frozenset({CHECK_DATA_FRESHNESS})
CHECK_DEAD_LETTER = "alert_dead_letter"
CHECK_QUEUE_STALLED = "run_queue_stalled"
QUEUE_STALLED_KEY = f"{CHECK_QUEUE_STALLED}|run queue|-"
# Runs that finished this long before the cursor are looked at again (their ids are remembered),
# so a run whose end was recorded late is not missed.
OVERLAP = timedelta(minutes=5)
# Time a tick spends delivering, well inside the daemon's 60 s sensor evaluation timeout.
DELIVERY_BUDGET = timedelta(seconds=30)
# Finished runs read per page, and pages per tick (the rest are read on the next tick).
RUNS_PAGE = 200
MAX_PAGES = 25
# A recovery reaches the end of the asset graph within the longest lag any stage is allowed before
# it alerts (the Device object's): a failure still there after that is not the recovered cause's.
RECOVERY_GRACE = max(sla.alert for sla in (slas.CLEAN_READINGS, slas.FEATURES, slas.DEVICE_OBJECT))
SEVERITY_RANK = {"warning": 1, "error": 2}
GUIDE_CHECK_FAILURE = guide_section("Reading a check failure")
GUIDE_RUN_FAILURE = guide_section("A run failed")
GUIDE_DEAD_LETTER = guide_section("An alert the sink refused")
GUIDE_QUEUE_STALLED = guide_section("Runs wait in the queue with nothing running")
RUNNING = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
ENDED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


def route_for(check_name: str) -> str:
    return ROUTE_ML if check_name in ML_CHECKS else ROUTE_DATA_ENGINEERING


def ui_url(run_id: str) -> str:
    base = os.environ.get("FS_DAGSTER_UI_URL", "http://127.0.0.1:3000").rstrip("/")
    return f"{base}/runs/{run_id}"


def lasted(seconds: float) -> str:
    """`45 s`, `52 min`, `3 h 05 min`."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60:02d} min"


def _partitions_overlap(a: str | None, b: str | None) -> bool:
    """Whether two partitions (a key or a `first..last` range; None for all) share a key."""
    if a is None or b is None:
        return True
    a_first, _, a_last = a.partition("..")
    b_first, _, b_last = b.partition("..")
    return a_first <= (b_last or b_first) and b_first <= (a_last or a_first)


class Lineage:
    """What feeds what, from the code location's asset graph. A sensor built without one (outside
    the code location) knows no lineage: only failures on the same asset explain each other."""

    def __init__(self, repository_def: dg.RepositoryDefinition | None):
        self._graph = repository_def.asset_graph if repository_def is not None else None
        ordered = self._graph.toposorted_asset_keys if self._graph is not None else []
        self._keys = {key.to_user_string(): key for key in ordered}
        self._order = {name: i for i, name in enumerate(self._keys)}
        self._upstream: dict[str, frozenset[str]] = {}

    def order(self, asset: str) -> int:
        """Upstream assets sort first."""
        return self._order.get(asset, len(self._order))

    def upstream(self, asset: str) -> frozenset[str]:
        """`asset` and every asset it is computed from, however far up."""
        if asset not in self._upstream:
            key = self._keys.get(asset)
            ancestors = self._graph.get_ancestor_asset_keys(key) if key is not None else ()
            self._upstream[asset] = frozenset({asset, *(k.to_user_string() for k in ancestors)})
        return self._upstream[asset]

    def siblings(self, a: str, b: str) -> bool:
        """Two assets computed from the same inputs (the window sizes of one feature table)."""
        if a == b or a not in self._keys or b not in self._keys:
            return False
        parents = self._graph.get(self._keys[a]).parent_keys
        return bool(parents) and parents == self._graph.get(self._keys[b]).parent_keys


@dataclass
class Failure:
    """A failing check or run as last seen, and where it stands: an incident of its own, attached
    to the incident `cause`, or held (`held_since` set) after its incident `cause` resolved."""

    key: str
    check: str
    assets: list[str]
    partition: str | None  # the partition judged: a cause must share it (None: any)
    route: str
    severity: str
    since: float  # when it was first seen failing
    alert: dict  # its latest trigger: values, what to do, run
    cause: str | None = None
    held_since: float | None = None
    sent: str | None = None  # as an incident: the highest severity the sink has been told of
    attached: dict[str, dict] = field(default_factory=dict)  # as an incident: the failures it explains
    # As a failed run: its assets computed again since, by runs of another scope.
    recomputed: list[str] = field(default_factory=list)

    @property
    def is_incident(self) -> bool:
        return self.cause is None and self.held_since is None

    def context(self, state: str) -> dict:
        """How this failure appears in its incident's alerts."""
        return {
            "key": self.key,
            "check": self.check,
            "asset": ",".join(self.assets),
            "severity": self.severity,
            "state": state,
            "summary": self.alert["summary"],
        }


class RoutingState:
    """The sensor's cursor: where it read up to, the failures it follows and undelivered alerts."""

    def __init__(self, raw: str | None):
        data = json.loads(raw) if raw else {}
        self.since: float = data.get("since", 0.0)
        self.seen: dict[str, float] = data.get("seen", {})
        self.failing: dict[str, Failure] = {key: Failure(**value) for key, value in data.get("failing", {}).items()}
        # Incidents resolved within RECOVERY_GRACE: {key: {"check", "assets", "partition", "route", "at"}}.
        self.recovered: dict[str, dict] = data.get("recovered", {})
        outbox = data.get("outbox", {})
        # Queues by destination; a cursor written before there was one queue per destination held a list.
        self.outbox: dict[str, list] = {"": outbox} if isinstance(outbox, list) else outbox
        # Each destination's health (`SinkWatch`).
        self.sinks: dict[str, dict] = data.get("sinks", {})
        # Since when this sensor has seen runs queued with nothing running (None: it has not).
        self.queue_still_since: float | None = data.get("queue_still_since")
        for key, opened in data.get("open", {}).items():
            self.failing.setdefault(key, _incident_from_earlier_cursor(key, opened, self.since))

    def dump(self) -> str:
        horizon = self.since - OVERLAP.total_seconds()
        self.seen = {run_id: at for run_id, at in self.seen.items() if at >= horizon}
        return json.dumps(
            {
                "since": self.since,
                "seen": self.seen,
                "failing": {key: asdict(failure) for key, failure in self.failing.items()},
                "recovered": self.recovered,
                "outbox": {destination: queue for destination, queue in self.outbox.items() if queue},
                "sinks": self.sinks,
                "queue_still_since": self.queue_still_since,
            },
            default=str,
        )


def _incident_from_earlier_cursor(key: str, opened: dict, since: float) -> Failure:
    """An incident a cursor of the one-incident-per-check router had open, so that it still resolves."""
    check, what, partition = (key.split("|", 2) + ["-", "-"])[:3]
    assets = what[what.index("[") + 1 : -1].split(",") if check == CHECK_RUN_FAILURE and "[" in what else [what]
    severity, route = opened.get("severity", "error"), opened.get("route", ROUTE_DATA_ENGINEERING)
    alert = Alert(
        dedup_key=key, action="trigger", route=route, severity=severity, urgency=urgency_for("trigger", severity),
        summary=f"{check} failed on {what}", asset=what, partition=None if partition == "-" else partition, check=check,
        observed=None, threshold=None, run_id="", url="", timestamp=since,
    )  # fmt: skip
    return Failure(key, check, assets, alert.partition, route, severity, since, alert.to_dict(), sent=severity)


class Incidents:
    """Failures and the incidents they belong to; each change returns the alerts it sends."""

    def __init__(self, state: RoutingState, lineage: Lineage):
        self.state = state
        self.failing = state.failing
        self.lineage = lineage

    # What explains what.

    def _explains(self, cause: Failure | dict, failure: Failure) -> bool:
        """Whether `cause` (a failure, or an incident that recovered) is a cause of `failure`."""
        assets, check, partition, route = (
            (cause.assets, cause.check, cause.partition, cause.route)
            if isinstance(cause, Failure)
            else (cause["assets"], cause["check"], cause["partition"], cause["route"])
        )
        # Each route's people hear of a cause once: a failure attaches only to an incident they were told of.
        if route != failure.route or not _partitions_overlap(partition, failure.partition):
            return False
        assets = set(assets)
        if any(self.lineage.upstream(a) & assets for a in failure.assets):
            return True
        return check == failure.check and any(self.lineage.siblings(a, b) for a in failure.assets for b in assets)

    def _incident_for(self, failure: Failure) -> Failure | None:
        """The open incident explaining `failure` (the earliest opened, if several do)."""
        candidates = set()
        for other in self.failing.values():
            if other.key == failure.key or other.held_since is not None:
                continue
            if self._explains(other, failure):
                candidates.add(other.cause or other.key)
        found = [self.failing[key] for key in candidates if key in self.failing]
        return min(found, key=lambda incident: (incident.since, incident.key), default=None)

    def _recovery_for(self, failure: Failure) -> tuple[float, str] | None:
        """The recovery in progress upstream of `failure`, if any: since when, and of which incident."""
        found = [
            (other.held_since, other.cause or other.key)
            for other in self.failing.values()
            if other.key != failure.key and other.held_since is not None and self._explains(other, failure)
        ]
        found += [(done["at"], key) for key, done in self.state.recovered.items() if key != failure.key and self._explains(done, failure)]
        return min(found, default=None)

    def _members(self, incident: Failure) -> list[Failure]:
        return [f for f in self.failing.values() if f.cause == incident.key and f.held_since is None]

    @staticmethod
    def _recomputed(failure: Failure, run_start: float, materialized: set[str]) -> bool:
        """Its asset was computed again after the recovery and it still fails: the failure is its own."""
        return failure.held_since is not None and run_start >= failure.held_since and bool(materialized & set(failure.assets))

    # Changes.

    def failed(self, failure: Failure, run_start: float, materialized: set[str]) -> list[Alert]:
        """`failure` was seen failing in a run that started at `run_start` and computed `materialized`."""
        known = self.failing.get(failure.key)
        if known is None:
            self.failing[failure.key] = failure
            return self._place(failure, run_start, materialized)
        known.severity, known.alert, known.partition = failure.severity, failure.alert, failure.partition
        if known.held_since is not None:
            return self._promote(known, "recomputed") if self._recomputed(known, run_start, materialized) else []
        if known.cause is not None:
            incident = self.failing.get(known.cause)
            if incident is None:  # its incident is gone (a cursor from before): placed afresh
                known.cause = None
                return self._place(known, run_start, materialized)
            incident.attached[known.key] = known.context("failing")
            return self._raise(incident)
        return self._raise(known)

    def passed(self, key: str, at: float, run_start: float, resolve: Alert, detail: str | None) -> list[Alert]:
        """The check or run `key` passed at `at`, in a run that started at `run_start`."""
        failure = self.failing.pop(key, None)
        if failure is None or failure.held_since is not None:
            return []
        if failure.cause is not None:
            incident = self.failing.get(failure.cause)
            if incident is not None:
                incident.attached[key] = failure.context("passed")
            return []
        # The incident's own cause passes: it resolves, and what was attached to it is held.
        held = self._members(failure)
        for member in held:
            member.held_since = run_start
            failure.attached[member.key] = member.context("still failing")
        self.state.recovered[key] = {
            "check": failure.check,
            "assets": failure.assets,
            "partition": failure.partition,
            "route": failure.route,
            "at": run_start,
        }
        duration = max(at - failure.since, 0.0)
        summary = f"{resolve.summary} after {lasted(duration)}" + (f": {detail}" if detail else "")
        if held:
            until = datetime.fromtimestamp(run_start + RECOVERY_GRACE.total_seconds(), UTC)
            summary += (
                f"; {len(held)} attached failure(s) still failing, each opens an incident of its own"
                f" if still failing at {until:%H:%M} UTC or after its asset is recomputed"
            )
        severity = failure.sent or failure.severity
        return [
            replace(
                resolve,
                route=failure.route,
                severity=severity,
                urgency=urgency_for("resolve", severity),
                summary=summary,
                attached=list(failure.attached.values()),
                duration_seconds=duration,
            )
        ]

    def expire(self, now: float) -> list[Alert]:
        """Held failures whose grace is over open incidents of their own, the most upstream first."""
        grace = RECOVERY_GRACE.total_seconds()
        due = [f for f in self.failing.values() if f.held_since is not None and f.held_since + grace <= now]
        alerts: list[Alert] = []
        for failure in sorted(due, key=lambda f: (min(map(self.lineage.order, f.assets)), f.key)):
            if failure.held_since is not None:  # not adopted meanwhile by one promoted before it
                alerts += self._promote(failure, "grace")
        self.state.recovered = {key: done for key, done in self.state.recovered.items() if done["at"] + grace > now}
        return alerts

    def _place(self, failure: Failure, run_start: float, materialized: set[str]) -> list[Alert]:
        incident = self._incident_for(failure)
        if incident is not None:
            failure.cause = incident.key
            incident.attached[failure.key] = failure.context("failing")
            return self._raise(incident)
        recovery = self._recovery_for(failure)
        if recovery is not None:
            failure.held_since, failure.cause = recovery
            # New since the recovery, in a run that computed its asset after it: a failure of its own.
            return self._promote(failure, "new") if self._recomputed(failure, run_start, materialized) else []
        return self._open(failure)

    def _open(self, failure: Failure, note: str | None = None) -> list[Alert]:
        """`failure` becomes an incident; held failures it explains attach to it."""
        failure.cause = failure.held_since = None
        for other in self.failing.values():
            if other.held_since is not None and other.key != failure.key and self._explains(failure, other):
                other.cause, other.held_since = failure.key, None
                failure.attached[other.key] = other.context("failing")
        return self._raise(failure, note)

    def _promote(self, failure: Failure, why: str) -> list[Alert]:
        former = self.state.recovered.get(failure.cause or "")
        cause = f"{former['check']} on {','.join(former['assets'])}" if former else failure.cause
        if why == "new":
            note = f"a failure of its own: it began after {cause} recovered, in a run that recomputed its asset"
        elif why == "recomputed":
            note = f"it still fails after its asset was recomputed since {cause} recovered"
        else:
            note = f"it still fails {lasted(time.time() - (failure.held_since or 0))} after {cause} recovered"
        return self._open(failure, note)

    def _raise(self, incident: Failure, note: str | None = None) -> list[Alert]:
        """The trigger `incident` sends: when it opens, and once more if it rises from WARN to ERROR."""
        members = self._members(incident)
        severity = max([incident.severity, *(m.severity for m in members)], key=SEVERITY_RANK.__getitem__)
        if incident.sent is not None and SEVERITY_RANK[severity] <= SEVERITY_RANK[incident.sent]:
            return []
        incident.sent = severity
        alert = Alert.from_dict(incident.alert)
        summary = alert.summary + (f" ({note})" if note else "")
        if members:
            summary += f"; {len(members)} downstream failure(s) attached"
        return [
            replace(
                alert,
                severity=severity,
                urgency=urgency_for("trigger", severity),
                summary=summary,
                attached=[m.context("failing") for m in members],
                timestamp=time.time(),
            )
        ]


# One finished run: its failures and passes, in order.


@dataclass(frozen=True)
class RunFacts:
    run: dg.DagsterRun
    what: str  # job[assets]
    assets: set[str]  # the assets it computed (or planned to)
    partition: str | None
    start: float
    end: float


def run_scope(instance: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[str, set[str], str | None]:
    """What a run did: its job and, for asset runs, the assets it selected; and its partition or range.

    Runs of one job over other assets or days are other incidents: the automation sensor's runs
    all share `__ASSET_JOB`, and one of them succeeding says nothing of another that failed."""
    keys = run.asset_selection or {
        r.event_log_entry.dagster_event.event_specific_data.asset_key
        for r in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED, limit=10_000).records
    }
    assets = {k.to_user_string() for k in keys}
    what = f"{run.job_name}[{','.join(sorted(assets))}]" if assets else run.job_name
    tags = run.tags
    if "dagster/asset_partition_range_start" in tags:
        return what, assets, f"{tags['dagster/asset_partition_range_start']}..{tags['dagster/asset_partition_range_end']}"
    return what, assets, tags.get("dagster/partition")


def _why_run_failed(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """The first failed step's error, in one line: the error the step's code raised, not Dagster's wrapper of it."""
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=1).records:
        error = getattr(record.event_log_entry.dagster_event.event_specific_data, "error", None)
        while error is not None and error.cause is not None:
            error = error.cause
        if error is not None and error.message:
            line = error.message.strip().splitlines()[0]
            return line if len(line) <= 200 else line[:199] + "…"
    return None


def _alert(key: str, action: str, route: str, severity: str, summary: str, asset: str, partition: str | None, check: str,
           verdict: Verdict | None, run_id: str, what_to_do: str) -> Alert:  # fmt: skip
    return Alert(
        dedup_key=key, action=action, route=route, severity=severity, urgency=urgency_for(action, severity), summary=summary,
        asset=asset, partition=partition, check=check, observed=verdict.observed if verdict else None,
        threshold=verdict.threshold if verdict else None, run_id=run_id, url=ui_url(run_id), timestamp=time.time(),
        comparison=verdict.comparison if verdict else None, unit=verdict.unit if verdict else None,
        what_to_do=verdict.what_to_do if verdict else what_to_do,
    )  # fmt: skip


def _run_alerts(instance: dg.DagsterInstance, incidents: Incidents, record: dg.RunRecord) -> list[Alert]:
    run = record.dagster_run
    what, assets, partition = run_scope(instance, run)
    start = record.start_time or record.create_timestamp.timestamp()
    facts = RunFacts(run, what, assets, partition, start, record.end_time or record.update_timestamp.timestamp())
    evaluations = [
        (r.event_log_entry.timestamp, r.event_log_entry.dagster_event.event_specific_data)
        for r in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, limit=10_000).records
    ]
    if assets:
        # A data clock pages from its own check runs only (`freshness_checks_sensor`, or an operator's
        # "Execute checks"), which know a fresh store's start-up grace. One that rode along with a run
        # materializing assets judged at that run's moment: during a fresh store's catch-up, the
        # backlog's oldest day, thousands of minutes "late". Its failure shows in the UI and does not
        # alert; its pass resolves like any other (on a live store the clean runs keep passing it, so
        # the sensor never finds the clock due for a check run of its own).
        evaluations = [(at, e) for at, e in evaluations if e.passed or e.check_name not in CLOCK_CHECKS]
    # What passed first, downstream before upstream, so that a resolve knows which of its attached
    # failures cleared with it; then the run's own outcome; then what failed, causes before what they
    # cause: upstream assets first, then ERROR before WARN on one asset.
    lineage = incidents.lineage

    def upstream_first(timed):
        evaluation = timed[1]
        return (
            lineage.order(evaluation.asset_key.to_user_string()),
            evaluation.severity != dg.AssetCheckSeverity.ERROR,
            evaluation.check_name,
        )

    alerts: list[Alert] = []
    for at, evaluation in sorted((te for te in evaluations if te[1].passed), key=upstream_first, reverse=True):
        alerts += _evaluation_alerts(incidents, facts, at, evaluation)
    alerts += _run_outcome_alerts(instance, incidents, facts, evaluations)
    for at, evaluation in sorted((te for te in evaluations if not te[1].passed), key=upstream_first):
        alerts += _evaluation_alerts(incidents, facts, at, evaluation)
    return alerts


def _run_outcome_alerts(instance: dg.DagsterInstance, incidents: Incidents, facts: RunFacts, evaluations) -> list[Alert]:
    """A failed run is an incident on the assets it computes, resolved by the next success of the same scope."""
    run = facts.run
    if run.job_name == SELF_TEST_JOB:
        return []  # the self-test pages and resolves its own incident, through the sink directly
    key = f"{CHECK_RUN_FAILURE}|{facts.what}|{facts.partition or '-'}"
    where = facts.what + (f" [{facts.partition}]" if facts.partition else "")
    if run.status == dg.DagsterRunStatus.FAILURE:
        # A run stopped by a blocking ERROR check is that check's incident: it is not announced twice.
        if any(not e.passed and e.severity == dg.AssetCheckSeverity.ERROR and e.blocking for _, e in evaluations):
            return []
        reason = _why_run_failed(instance, run.run_id)
        summary = f"run of {where} failed" + (f": {reason}" if reason else "") + " (observed status FAILURE, expected SUCCESS)"
        what_to_do = f"open the run's logs, fix what failed and re-execute it; see {GUIDE_RUN_FAILURE}"
        alert = _alert(key, "trigger", ROUTE_DATA_ENGINEERING, "error", summary, facts.what, facts.partition, CHECK_RUN_FAILURE,
                       None, run.run_id, what_to_do)  # fmt: skip
        alert = replace(alert, observed="FAILURE", threshold="SUCCESS", comparison="==", unit="run status")
        failure = Failure(key, CHECK_RUN_FAILURE, sorted(facts.assets) or [run.job_name], facts.partition, ROUTE_DATA_ENGINEERING,
                          "error", facts.end, alert.to_dict())  # fmt: skip
        return incidents.failed(failure, facts.start, facts.assets)
    resolve = _alert(key, "resolve", ROUTE_DATA_ENGINEERING, "error", f"{where} runs again", facts.what, facts.partition,
                     CHECK_RUN_FAILURE, None, run.run_id, GUIDE_RUN_FAILURE)  # fmt: skip
    return incidents.passed(key, facts.end, facts.start, resolve, None) + _recomputed_runs(incidents, facts, key)


def _covers(scope: str | None, partition: str | None) -> bool:
    """Whether a run of partition (or range `a..b`) `scope` computed `partition`."""
    if scope is None or partition is None:
        return scope == partition
    first, _, last = scope.partition("..")
    return scope == partition or (bool(last) and first <= partition <= last)


def _recomputed_runs(incidents: Incidents, facts: RunFacts, own_key: str) -> list[Alert]:
    """Failed runs of another scope whose every asset has now been computed again for their partition
    by runs started after they failed (the automation relaunches a killed run's work in runs of its
    own choosing): each resolves, saying so."""
    alerts: list[Alert] = []
    for failure in list(incidents.state.failing.values()):
        if failure.check != CHECK_RUN_FAILURE or failure.key == own_key or facts.start < failure.since:
            continue
        if not _covers(facts.partition, failure.partition) or not (facts.assets & set(failure.assets)):
            continue
        failure.recomputed = sorted(set(failure.recomputed) | (facts.assets & set(failure.assets)))
        if set(failure.assets) <= set(failure.recomputed):
            where = failure.key.split("|")[1] + (f" [{failure.partition}]" if failure.partition else "")
            resolve = _alert(failure.key, "resolve", ROUTE_DATA_ENGINEERING, "error",
                             f"every asset of the failed run of {where} computed again", ",".join(failure.assets),
                             failure.partition, CHECK_RUN_FAILURE, None, facts.run.run_id, GUIDE_RUN_FAILURE)  # fmt: skip
            alerts += incidents.passed(failure.key, facts.end, facts.start, resolve, None)
    return alerts


def _superseded_days(incidents: Incidents, facts: RunFacts, at: float, check: str, asset: str, day: str, verdict: Verdict) -> list[Alert]:
    """Failures of `check` on `asset` for days before `day`, answered by its pass on `day`: the check
    judges the newest windows (`Verdict.judges_newest`), so once a day is over its failure is never
    judged again, and without this its incident would stay open for good."""
    alerts: list[Alert] = []
    for failure in list(incidents.failing.values()):
        if failure.check != check or failure.assets != [asset] or not failure.partition or not failure.partition.split("..")[-1] < day:
            continue
        resolve = _alert(failure.key, "resolve", failure.route, "error", f"{check} passes on the newer {asset} [{day}]", asset,
                         failure.partition, check, verdict, facts.run.run_id, GUIDE_CHECK_FAILURE)  # fmt: skip
        alerts += incidents.passed(failure.key, at, facts.start, resolve, verdict.sentence())
    return alerts


def _evaluation_alerts(incidents: Incidents, facts: RunFacts, at: float, evaluation) -> list[Alert]:
    check, asset = evaluation.check_name, evaluation.asset_key.to_user_string()
    key = f"{check}|{asset}|{evaluation.partition or '-'}"
    verdict = Verdict.from_metadata(dict(evaluation.metadata or {}))
    judged = (verdict.partition if verdict is not None else None) or evaluation.partition
    where = asset + (f" [{judged}]" if judged else "")
    route = route_for(check)
    if evaluation.passed:
        resolve = _alert(key, "resolve", route, "error", f"{check} passes again on {where}", asset, judged, check, verdict,
                         facts.run.run_id, GUIDE_CHECK_FAILURE)  # fmt: skip
        alerts = incidents.passed(key, at, facts.start, resolve, verdict.sentence() if verdict is not None else None)
        if verdict is not None and verdict.judges_newest and evaluation.partition:
            alerts += _superseded_days(incidents, facts, at, check, asset, evaluation.partition, verdict)
        return alerts
    severity = "error" if evaluation.severity == dg.AssetCheckSeverity.ERROR else "warning"
    if verdict is not None:
        # The check's own description goes along when it says more than the verdict (which file,
        # which days, which feature): on-call reads the page, not the check's metadata.
        sentence, detail = verdict.sentence(), (evaluation.description or "").strip()
        detail = detail[len(sentence) :].lstrip(":;, ") if detail.startswith(sentence) else detail
        summary = f"{check} failed on {where}: {sentence}" + (f" ({detail})" if detail else "")
    else:
        summary = f"{check} failed on {where}: the check recorded no value or threshold" + (
            f" ({evaluation.description})" if evaluation.description else ""
        )
    what_to_do = f"open the check's evaluation on the asset's Checks tab; see {GUIDE_CHECK_FAILURE}"
    alert = _alert(key, "trigger", route, severity, summary, asset, judged, check, verdict, facts.run.run_id, what_to_do)
    return incidents.failed(Failure(key, check, [asset], judged, route, severity, at, alert.to_dict()), facts.start, facts.assets)


# The sensor.


@dg.sensor(
    name="alert_routing_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Routes failed asset checks and failed runs to on-call (data engineering) or the ML channel: one incident per root "
        "cause, failures downstream of it attached, one resolve saying how long it lasted."
    ),
)
def alert_routing_sensor(context: dg.SensorEvaluationContext, alerts: AlertSinkResource):
    # A tick that cannot read the runs fails whole: nothing is delivered or remembered, and no
    # heartbeat is written, so the self-test pages if it keeps failing.
    state = RoutingState(context.cursor)
    incidents = Incidents(state, Lineage(context.repository_def))
    for record in _finished_runs(context.instance, state):
        run_id = record.dagster_run.run_id
        try:
            state.outbox.setdefault("", []).extend(a.to_dict() for a in _run_alerts(context.instance, incidents, record))
        except Exception as exc:  # one unreadable run must not stop the alert path
            context.log.error(f"alert routing could not read run {run_id}: {type(exc).__name__}: {exc}")
            alerts.dead_letter({"run_id": run_id}, f"run could not be read: {type(exc).__name__}: {exc}")
    state.outbox.setdefault("", []).extend(a.to_dict() for a in _queue_alerts(context.instance, incidents, time.time()))
    state.outbox.setdefault("", []).extend(a.to_dict() for a in incidents.expire(time.time()))
    try:
        report = _deliver(context, state, alerts)
        watch, at = SinkWatch(state.sinks, alerts), time.time()
        for destination, contact in report.contacts.items():
            watch.record(destination, contact, at)
        watch.probe_idle(set(report.contacts), at, context.log.warning)
        for line in watch.page(at, "", context.log.warning):
            context.log.warning(line)
    finally:
        context.update_cursor(state.dump())
    for destination, reason in report.stalled.items():
        context.log.warning(f"{len(state.outbox.get(destination, []))} alerts waiting for {destination} ({reason}); retrying next tick")
    incidents_open = [f for f in state.failing.values() if f.is_incident]
    said = (
        f"{report.delivered} alerts delivered ({'; '.join(f'{route} -> {d}' for route, d in alerts.destinations().items())}), "
        f"{report.refused} set aside as refused, {sum(map(len, state.outbox.values()))} waiting, {len(incidents_open)} incidents open, "
        f"{sum(1 for f in state.failing.values() if f.cause and f.held_since is None)} failures attached, "
        f"{sum(1 for f in state.failing.values() if f.held_since is not None)} held after a recovery"
    )
    if report.broken:
        # A destination whose sink could not even try: the tick did not finish its work, so no heartbeat.
        context.log.error(f"alert delivery failed for {', '.join(report.broken)}")
        return dg.SkipReason(f"delivery failed for {', '.join(report.broken)}; {said}")
    alerts.beat()
    return dg.SkipReason(said)


@dataclass(frozen=True)
class QueueStall:
    """Runs waiting in the queue while nothing runs: for how long, how many, and the oldest of them."""

    seconds: float
    waiting: int
    oldest: dg.DagsterRun


def queue_stall(instance: dg.DagsterInstance, now: float) -> QueueStall | None:
    """How long the queue has held runs with nothing running, or None while a run runs or none waits.

    Counted from the later of the oldest waiting run's arrival and the end of the last run: a run
    that waited behind a long one has not been stalled for all of its wait."""
    if instance.get_run_records(filters=dg.RunsFilter(statuses=RUNNING), limit=1):
        return None
    queued = dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED])
    oldest = instance.get_run_records(filters=queued, limit=1, ascending=True)
    if not oldest:
        return None
    since = oldest[0].create_timestamp.timestamp()
    ended = instance.get_run_records(filters=dg.RunsFilter(statuses=ENDED), order_by="end_time", ascending=False, limit=1)
    if ended and ended[0].end_time is not None:
        since = max(since, ended[0].end_time)
    return QueueStall(max(now - since, 0.0), instance.get_runs_count(queued), oldest[0].dagster_run)


def _queue_alerts(instance: dg.DagsterInstance, incidents: Incidents, now: float) -> list[Alert]:
    """A page when the queue has held runs past `QUEUE_STALLED` with nothing running, a resolve when it moves."""
    stall = queue_stall(instance, now)
    state = incidents.state
    state.queue_still_since = None if stall is None else (state.queue_still_since or now)
    # A stall counts only for as long as this sensor has watched it: runs queued while the daemon was
    # down are dequeued within seconds of its return, and must not page on its first tick.
    seconds = min(stall.seconds, now - state.queue_still_since) if stall is not None and state.queue_still_since else 0.0
    limit = QUEUE_STALLED.total_seconds() / 60
    if stall is None or seconds / 60 <= limit:
        resolve = _alert(QUEUE_STALLED_KEY, "resolve", ROUTE_DATA_ENGINEERING, "error", "the run queue moves again", "run queue", None,
                         CHECK_QUEUE_STALLED, None, "", GUIDE_QUEUE_STALLED)  # fmt: skip
        return incidents.passed(QUEUE_STALLED_KEY, now, now, resolve, None)
    run = stall.oldest
    what, _, partition = run_scope(instance, run)
    where = what + (f" [{partition}]" if partition else "")
    verdict = Verdict(
        round(seconds / 60, 1), limit, "<=", "minutes",
        f"see which pool or limit the oldest run waits for (its page in the UI, Deployment > Concurrency) and free what a run that "
        f"has ended still holds; see {GUIDE_QUEUE_STALLED}",
        asset=what, partition=partition, run_id=run.run_id,
    )  # fmt: skip
    summary = f"{stall.waiting} run(s) waiting in the queue with nothing running, the oldest {where}: {verdict.sentence()}"
    alert = _alert(QUEUE_STALLED_KEY, "trigger", ROUTE_DATA_ENGINEERING, "error", summary, "run queue", partition, CHECK_QUEUE_STALLED,
                   verdict, run.run_id, verdict.what_to_do)  # fmt: skip
    # No assets: the stall neither attaches to an incident of the runs it holds back nor takes theirs.
    failure = Failure(QUEUE_STALLED_KEY, CHECK_QUEUE_STALLED, [], partition, ROUTE_DATA_ENGINEERING, "error", now - seconds,
                      alert.to_dict())  # fmt: skip
    return incidents.failed(failure, now, set())


def _finished_runs(instance: dg.DagsterInstance, state: RoutingState):
    """Runs finished since the cursor and not seen yet, oldest first, page by page: more than a
    page can end between ticks, and a page of runs already seen (the overlap) is read through,
    up to MAX_PAGES a tick."""
    after = max(state.since - OVERLAP.total_seconds(), 0)
    for _ in range(MAX_PAGES):
        page = instance.get_run_records(
            filters=dg.RunsFilter(
                statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE], updated_after=datetime.fromtimestamp(after, UTC)
            ),
            order_by="update_timestamp",
            ascending=True,
            limit=RUNS_PAGE,
        )
        for record in page:
            run_id, stamp = record.dagster_run.run_id, record.update_timestamp.timestamp()
            if run_id not in state.seen:
                yield record
            state.seen[run_id] = stamp
            state.since = max(state.since, stamp)
        if len(page) < RUNS_PAGE:
            return
        # The next page starts at the last run read; runs sharing its timestamp are skipped as seen.
        after = page[-1].update_timestamp.timestamp() - 1e-6


# Delivery: one queue per destination, served side by side.


@dataclass
class DeliveryReport:
    delivered: int = 0
    refused: int = 0
    stalled: dict[str, str] = field(default_factory=dict)  # destination -> why it waits
    broken: list[str] = field(default_factory=list)  # destinations whose sink raised instead of answering
    contacts: dict[str, Contact] = field(default_factory=dict)  # destination -> whether its sink took what was sent


@dataclass
class _Drained:
    delivered: int = 0
    refused: int = 0
    notices: list[Alert] = field(default_factory=list)
    stalled: str | None = None
    broken: bool = False
    refused_detail: str = ""

    def contact(self) -> Contact | None:
        """What this drain says of its sink: it took an alert, or why it did not (None: nothing was tried)."""
        if self.stalled is not None:
            return Contact(False, self.stalled)
        if self.delivered:
            return Contact(True)
        if self.refused:
            return Contact(False, f"refused ({self.refused_detail})")
        return None


def _destination(alerts: AlertSinkResource, route: object) -> str:
    try:
        return alerts.destination(route if isinstance(route, str) else None)
    except Exception as exc:  # settings that cannot name a destination: the queue waits under its route
        return f"route {route}: no destination ({type(exc).__name__})"


def _deliver(context: dg.SensorEvaluationContext, state: RoutingState, alerts: AlertSinkResource) -> DeliveryReport:
    """Deliver each destination's queue in order, all destinations at once, within DELIVERY_BUDGET.

    A destination stops for this tick at its first alert it could not deliver (its sink is down or
    slow) and the rest of its queue waits in the cursor; the others go on. A tick that timed out
    would save no cursor and re-send what it had delivered, hence the budget."""
    queues: dict[str, list] = {}
    for queue in state.outbox.values():
        for pending in queue:
            queues.setdefault(_destination(alerts, pending.get("route") if isinstance(pending, dict) else None), []).append(pending)
    state.outbox = queues
    report = DeliveryReport()
    deadline = time.monotonic() + DELIVERY_BUDGET.total_seconds()
    lock = threading.Lock()
    log = context.log
    while time.monotonic() < deadline:
        ready = [d for d, queue in queues.items() if queue and d not in report.stalled]
        if not ready:
            break
        with ThreadPoolExecutor(max_workers=len(ready), thread_name_prefix="alert-delivery") as pool:
            drained = list(pool.map(lambda d: _drain(d, queues[d], alerts, log, deadline, lock), ready))
        notices: list[Alert] = []
        for destination, result in zip(ready, drained, strict=True):
            report.delivered += result.delivered
            report.refused += result.refused
            notices += result.notices
            if result.stalled is not None:
                report.stalled[destination] = result.stalled
            if result.broken:
                report.broken.append(destination)
            if (contact := result.contact()) is not None:
                report.contacts[destination] = contact
        # Notices of refused alerts join their own destination's queue (another round, time allowing).
        for notice in notices:
            queues.setdefault(_destination(alerts, notice.route), []).append(notice.to_dict())
        if not notices:
            break
    state.outbox = {d: queue for d, queue in queues.items() if queue}
    return report


def _drain(destination: str, queue: list, alerts: AlertSinkResource, log, deadline: float, lock: threading.Lock) -> _Drained:
    """Deliver `queue` from its head until it is empty, an alert waits, or the time is up."""
    result = _Drained()
    while queue and time.monotonic() < deadline:
        pending = queue[0]
        try:
            alert = Alert.from_dict(pending)
        except (TypeError, ValueError) as exc:
            with lock:
                alerts.dead_letter(pending, f"not an alert: {exc}")
            queue.pop(0)
            result.refused += 1
            continue
        try:
            delivery = alerts.deliver(alert, log=log.warning)
        except Exception as exc:  # its message may carry the webhook's secret: the type names it
            result.stalled, result.broken = f"the sink raised {type(exc).__name__}", True
            return result
        if delivery.outcome is Outcome.DELIVERED:
            queue.pop(0)
            result.delivered += 1
        elif delivery.outcome is Outcome.REFUSED:
            queue.pop(0)
            result.refused += 1
            result.refused_detail = delivery.detail
            with lock:
                path = alerts.dead_letter(pending, f"refused by the sink: {delivery.detail}")
            if alert.check != CHECK_DEAD_LETTER:
                result.notices.append(_dead_letter_notice(alert, delivery.detail, str(path)))
        else:
            result.stalled = delivery.detail or "not delivered"
            return result
    return result


def _dead_letter_notice(alert: Alert, detail: str, path: str) -> Alert:
    """The alert that says another one was refused: short, so the sink takes it."""
    return Alert(
        dedup_key=f"{CHECK_DEAD_LETTER}|{alert.dedup_key[:100]}", action="trigger", route=ROUTE_DATA_ENGINEERING,
        severity="warning", urgency=urgency_for("trigger", "warning"),
        summary=f"an alert for {alert.asset[:80]} ({alert.check[:60]}) was refused by the sink ({detail}); it is kept in {path}",
        asset=alert.asset[:200], partition=alert.partition, check=CHECK_DEAD_LETTER, observed=detail, threshold="2xx",
        run_id=alert.run_id, url=alert.url, timestamp=time.time(), comparison="==", unit="HTTP status",
        what_to_do=f"read the refused alert in {path} and the sink's answer; see {GUIDE_DEAD_LETTER}",
    )  # fmt: skip
