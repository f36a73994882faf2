"""`alert_routing_sensor`: asset-check evaluations and run failures, routed to a person, once per incident.

A failed asset check does not fail its run, so run-failure sensors never see it; this sensor reads
the check evaluations of every run that finished since its cursor (`get_records_for_run`: a
global cursor over check events is not reliable on the default SQLite storage, whose event ids
restart per run). Each failing check opens an incident keyed by check, asset and partition and
sends one notification; later failures of the same incident send nothing (unless it escalates
from WARN to ERROR); the first pass sends one resolve. A failed run opens an incident resolved by
the next successful run of its job.

Routes: drift (`check_feature_drift`) goes to the ML channel; everything else (freshness,
coverage, accounting, schema, reconciliation, lag, null-fraction escalation, run failures) to
data engineering on-call. ERROR pages (high urgency), WARN does not (low). Never to maintenance
operators.

Delivery: alerts the sink could not take stay in the cursor's outbox and are retried on the next
tick, so nothing is dropped while a webhook is down. An alert the sink refuses for good is set
aside in the dead-letter file, announced by an alert of its own, and the rest go on. Run records
are read page by page; a run or stored alert that cannot be read is set aside, never the cursor.
Every tick leaves a heartbeat that `alert_path_self_test_job` watches, so a silent alert path pages.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta

import dagster as dg

from fs_checks.drift_checks import CHECK_FEATURE_DRIFT
from fs_checks.score_checks import CHECK_SCORE_CONFIDENCE
from fs_resources.alerts import ROUTE_DATA_ENGINEERING, ROUTE_ML, Alert, AlertSinkResource, Outcome

# What a model's owners act on: drift, and scores resting on inputs they should not trust.
ML_CHECKS = frozenset({CHECK_FEATURE_DRIFT, CHECK_SCORE_CONFIDENCE})
SELF_TEST_JOB = "alert_path_self_test_job"
# Runs that finished this long before the cursor are looked at again (their ids are remembered),
# so a run whose end was recorded late is not missed.
OVERLAP = timedelta(minutes=5)
# Time a tick spends delivering, well inside the daemon's 60 s sensor evaluation timeout.
DELIVERY_BUDGET = timedelta(seconds=30)
# Finished runs read per page, and pages per tick (the rest are read on the next tick).
RUNS_PAGE = 200
MAX_PAGES = 25
CHECK_DEAD_LETTER = "alert_dead_letter"
# Metadata keys that carry "the value observed" and "the threshold", in order of preference.
OBSERVED_KEYS = (
    "observed",
    "lag_minutes",
    "fraction_differing",
    "coverage",
    "dagster/overdue_seconds",
    "dagster/last_updated_time",
    "missing",
    "duplicate_keys",
    "violations",
    "imbalance",
)
THRESHOLD_KEYS = ("threshold", "threshold_minutes", "error_below", "dagster/freshness_params")


def route_for(check_name: str) -> str:
    return ROUTE_ML if check_name in ML_CHECKS else ROUTE_DATA_ENGINEERING


def ui_url(run_id: str) -> str:
    base = os.environ.get("FS_DAGSTER_UI_URL", "http://127.0.0.1:3000").rstrip("/")
    return f"{base}/runs/{run_id}"


def _value(metadata: dict, keys: tuple[str, ...]):
    for key in keys:
        if key in metadata:
            value = metadata[key]
            return getattr(value, "value", value)
    return None


class RoutingState:
    """The sensor's cursor: where it read up to, open incidents and undelivered alerts."""

    def __init__(self, raw: str | None):
        data = json.loads(raw) if raw else {}
        self.since: float = data.get("since", 0.0)
        self.seen: dict[str, float] = data.get("seen", {})
        self.open: dict[str, dict] = data.get("open", {})
        self.outbox: list[dict] = data.get("outbox", [])

    def dump(self) -> str:
        horizon = self.since - OVERLAP.total_seconds()
        self.seen = {run_id: at for run_id, at in self.seen.items() if at >= horizon}
        return json.dumps({"since": self.since, "seen": self.seen, "open": self.open, "outbox": self.outbox})


def _alert(
    run, key: str, action: str, route: str, severity: str, summary: str, asset: str, partition, check: str, observed, threshold
) -> Alert:
    """One notification about `run`; only an ERROR being raised is urgent (a resolve never is)."""
    urgency = "high" if action == "trigger" and severity == "error" else "low"
    return Alert(
        key,
        action,
        route,
        severity,
        urgency,
        summary,
        asset,
        partition,
        check,
        observed,
        threshold,
        run.run_id,
        ui_url(run.run_id),
        time.time(),
    )


def incident_alerts(state: RoutingState, record, failed_checks: bool, instance: dg.DagsterInstance) -> list[Alert]:
    """The run-level alerts one finished run causes, updating the open incidents. A run failed by
    a blocking check is that check's incident: it is not announced twice."""
    run = record.dagster_run
    if run.job_name == SELF_TEST_JOB:
        return []  # the self-test pages and resolves its own incident, through the sink directly
    what, partition = run_scope(instance, run)
    key = f"run_failure|{what}|{partition or '-'}"
    if run.status == dg.DagsterRunStatus.FAILURE:
        # A run stopped by a blocking ERROR check was already paged as that check's incident.
        if key in state.open or failed_checks:
            return []
        state.open[key] = {"severity": "error", "route": ROUTE_DATA_ENGINEERING}
        return [
            _alert(
                run,
                key,
                "trigger",
                ROUTE_DATA_ENGINEERING,
                "error",
                f"run of {what} failed",
                what,
                partition,
                "run_failure",
                "FAILURE",
                "SUCCESS",
            )
        ]
    if key in state.open:
        del state.open[key]
        return [
            _alert(
                run,
                key,
                "resolve",
                ROUTE_DATA_ENGINEERING,
                "error",
                f"{what} runs again",
                what,
                partition,
                "run_failure",
                "SUCCESS",
                "SUCCESS",
            )
        ]
    return []


def run_scope(instance: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[str, str | None]:
    """What a run did: its job and, for asset runs, the assets it selected; and its partition or range.

    Runs of one job over other assets or days are other incidents: the automation sensor's runs
    all share `__ASSET_JOB`, and one of them succeeding says nothing of another that failed."""
    keys = run.asset_selection or {
        r.event_log_entry.dagster_event.event_specific_data.asset_key
        for r in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED, limit=10_000).records
    }
    assets = sorted(k.to_user_string() for k in keys)
    what = f"{run.job_name}[{','.join(assets)}]" if assets else run.job_name
    tags = run.tags
    if "dagster/asset_partition_range_start" in tags:
        return what, f"{tags['dagster/asset_partition_range_start']}..{tags['dagster/asset_partition_range_end']}"
    return what, tags.get("dagster/partition")


def check_alerts(state: RoutingState, record, evaluations) -> list[Alert]:
    """The check-level alerts of one finished run, updating the open incidents."""
    run = record.dagster_run
    alerts: list[Alert] = []
    for evaluation in evaluations:
        asset = evaluation.asset_key.to_user_string()
        partition = evaluation.partition
        key = f"{evaluation.check_name}|{asset}|{partition or '-'}"
        metadata = dict(evaluation.metadata or {})
        observed, threshold = _value(metadata, OBSERVED_KEYS), _value(metadata, THRESHOLD_KEYS)
        severity = "error" if evaluation.severity == dg.AssetCheckSeverity.ERROR else "warning"
        where = f"{asset}" + (f" [{partition}]" if partition else "")
        if not evaluation.passed:
            opened = state.open.get(key)
            if opened is None or (opened["severity"] == "warning" and severity == "error"):
                route = route_for(evaluation.check_name)
                state.open[key] = {"severity": severity, "route": route}
                summary = f"{evaluation.check_name} failed on {where}" + (f": {evaluation.description}" if evaluation.description else "")
                alerts.append(
                    _alert(run, key, "trigger", route, severity, summary, asset, partition, evaluation.check_name, observed, threshold)
                )
        elif key in state.open:
            opened = state.open.pop(key)
            summary = f"{evaluation.check_name} passes again on {where}"
            alerts.append(
                _alert(
                    run,
                    key,
                    "resolve",
                    opened["route"],
                    opened["severity"],
                    summary,
                    asset,
                    partition,
                    evaluation.check_name,
                    observed,
                    threshold,
                )
            )
    return alerts


@dg.sensor(
    name="alert_routing_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Routes failed asset checks and failed runs to on-call (data engineering) or the ML channel, once per incident, with resolves.",
)
def alert_routing_sensor(context: dg.SensorEvaluationContext, alerts: AlertSinkResource):
    state = RoutingState(context.cursor)
    try:
        for record in _finished_runs(context.instance, state):
            run_id = record.dagster_run.run_id
            try:
                state.outbox.extend(a.to_dict() for a in _run_alerts(context.instance, state, record))
            except Exception as exc:  # one unreadable run must not stop the alert path
                context.log.error(f"alert routing could not read run {run_id}: {type(exc).__name__}: {exc}")
                alerts.dead_letter({"run_id": run_id}, f"run could not be read: {type(exc).__name__}: {exc}")
            stamp = record.update_timestamp.timestamp()
            state.seen[run_id] = stamp
            state.since = max(state.since, stamp)
        delivered, refused = _deliver(context, state, alerts)
    finally:
        # Whatever happened above, what was read and delivered is remembered.
        context.update_cursor(state.dump())
        alerts.beat()
    where = "; ".join(f"{route} -> {destination}" for route, destination in alerts.destinations().items())
    if state.outbox:
        context.log.warning(f"{len(state.outbox)} alerts not delivered ({where}); retrying next tick")
    return dg.SkipReason(
        f"{delivered} alerts delivered ({where}), {refused} set aside as refused, {len(state.outbox)} waiting, "
        f"{len(state.open)} incidents open"
    )


def _finished_runs(instance: dg.DagsterInstance, state: RoutingState):
    """Runs finished since the cursor, oldest first, page by page (more than a page can end between ticks)."""
    after = max(state.since - OVERLAP.total_seconds(), 0)
    seen_now: set[str] = set()
    for _ in range(MAX_PAGES):
        page = instance.get_run_records(
            filters=dg.RunsFilter(
                statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE], updated_after=datetime.fromtimestamp(after, UTC)
            ),
            order_by="update_timestamp",
            ascending=True,
            limit=RUNS_PAGE,
        )
        fresh = [r for r in page if r.dagster_run.run_id not in state.seen and r.dagster_run.run_id not in seen_now]
        yield from fresh
        seen_now |= {r.dagster_run.run_id for r in page}
        if len(page) < RUNS_PAGE or not fresh:
            return
        # The next page starts at the last run read; runs sharing its timestamp are skipped as seen.
        after = page[-1].update_timestamp.timestamp() - 1e-6


def _run_alerts(instance: dg.DagsterInstance, state: RoutingState, record) -> list[Alert]:
    evaluations = [
        r.event_log_entry.dagster_event.event_specific_data
        for r in instance.get_records_for_run(
            record.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, limit=10_000
        ).records
    ]
    paged_by_check = any(not e.passed and e.severity == dg.AssetCheckSeverity.ERROR and e.blocking for e in evaluations)
    return incident_alerts(state, record, paged_by_check, instance) + check_alerts(state, record, evaluations)


def _deliver(context: dg.SensorEvaluationContext, state: RoutingState, alerts: AlertSinkResource) -> tuple[int, int]:
    """Deliver the outbox in order. Once one alert could not be delivered (the sink is down or slow),
    or the tick's time is spent, the rest wait in the cursor for the next tick: a tick that timed out
    would save no cursor and re-send what it had delivered. A refused alert is set aside."""
    waiting: list[dict] = []
    delivered = refused = 0
    deadline = time.monotonic() + DELIVERY_BUDGET.total_seconds()
    queue = list(state.outbox)
    while queue:
        pending = queue.pop(0)
        if waiting or time.monotonic() > deadline:
            waiting.append(pending)
            continue
        try:
            alert = Alert.from_dict(pending)
        except (TypeError, ValueError) as exc:
            alerts.dead_letter(pending, f"not an alert: {exc}")
            refused += 1
            continue
        result = alerts.deliver(alert, log=context.log.warning)
        if result.outcome is Outcome.DELIVERED:
            delivered += 1
        elif result.outcome is Outcome.REFUSED:
            refused += 1
            path = alerts.dead_letter(pending, f"refused by the sink: {result.detail}")
            if alert.check != CHECK_DEAD_LETTER:
                queue.append(_dead_letter_notice(alert, result.detail, str(path)).to_dict())
        else:
            waiting.append(pending)
    state.outbox = waiting
    return delivered, refused


def _dead_letter_notice(alert: Alert, detail: str, path: str) -> Alert:
    """The alert that says another one was refused: short, so the sink takes it."""
    return Alert(
        f"{CHECK_DEAD_LETTER}|{alert.dedup_key[:100]}",
        "trigger",
        ROUTE_DATA_ENGINEERING,
        "warning",
        "low",
        f"an alert for {alert.asset[:80]} ({alert.check[:60]}) was refused by the sink ({detail}); it is kept in {path}",
        alert.asset[:200],
        alert.partition,
        CHECK_DEAD_LETTER,
        detail,
        "2xx",
        alert.run_id,
        alert.url,
        time.time(),
    )
