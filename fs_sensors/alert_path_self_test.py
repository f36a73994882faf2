"""`alert_path_self_test_schedule` (every 15 minutes): pages when the alert path itself went quiet.

`alert_routing_sensor` leaves a heartbeat at every tick (every 30 s while the daemon runs it). If
the heartbeat is older than `HEARTBEAT_STALE` (the daemon is down, the sensor was stopped, or
every tick crashes), nothing would ever page about anything; this job pages directly, once per
outage, and resolves when the heartbeat is back.

A page about the alert path cannot trust the path it reports on, so it has two: the
data-engineering route's sink, then, when that one does not take it, the ML route's sink (when it
is another destination). Every page, whichever path carried it and also when none did, is appended
to `alert_path_down.jsonl` beside the alerts file (`$DAGSTER_HOME` by default), with the path that
carried it: the operator guide's "The alert path" sends on-call there. The resolve goes through the
path that carried the page.
"""

import json
import time
from datetime import timedelta

import dagster as dg

from fs_domain.run_limits import NO_SPARK_RUN, max_runtime_tags
from fs_resources.alerts import ROUTE_DATA_ENGINEERING, ROUTE_ML, Alert, AlertSinkResource

HEARTBEAT_STALE = timedelta(minutes=10)
SELF_TEST_KEY = "alert_path|alert_routing_sensor|heartbeat"
# The first path, then the second.
PATHS = (ROUTE_DATA_ENGINEERING, ROUTE_ML)


def _paged_file(alerts: AlertSinkResource):
    return alerts.heartbeat_file().with_name("alert_path_self_test.json")


def _alert(action: str, summary: str, age: float | None, run_id: str) -> Alert:
    return Alert(
        dedup_key=SELF_TEST_KEY, action=action, route=ROUTE_DATA_ENGINEERING, severity="error",
        urgency="high" if action == "trigger" else "low", summary=summary, asset="alert_routing_sensor", partition=None,
        check="alert_path_heartbeat", observed=None if age is None else round(age), threshold=HEARTBEAT_STALE.total_seconds(),
        run_id=run_id, url="", timestamp=time.time(),
    )  # fmt: skip


def _page(context: dg.OpExecutionContext, alerts: AlertSinkResource, alert: Alert, routes: tuple[str, ...]) -> str | None:
    """Send `alert` through the first of `routes` whose sink takes it and return that route (None
    when none did); always append it to the alert-path-down file, saying which path carried it."""
    carried_by, tried = alerts.send_first(alert, routes, log=context.log.warning)
    path = alerts.record_alert_path_down(
        {"at": time.time(), "action": alert.action, "carried_by": carried_by, "tried": tried, "alert": alert.to_dict()}
    )
    where = f"{carried_by} route's sink ({alerts.destination(carried_by)})" if carried_by else "no sink (every one failed)"
    (context.log.info if carried_by else context.log.error)(f"alert path self-test {alert.action} carried by {where}; recorded in {path}")
    return carried_by


def _carried_metadata(alerts: AlertSinkResource, carried_by: str | None) -> dict[str, str]:
    return {
        "carried_by": alerts.destination(carried_by) if carried_by else "no sink: only the local file",
        "alert_path_down_file": str(alerts.alert_path_down_file()),
    }


@dg.op(description="Page when alert_routing_sensor has not ticked for 10 minutes; resolve when it ticks again.")
def check_alert_path(context: dg.OpExecutionContext, alerts: AlertSinkResource) -> None:
    last = alerts.last_beat()
    age = None if last is None else time.time() - last
    paged_file = _paged_file(alerts)
    state = json.loads(paged_file.read_text()) if paged_file.exists() else {}
    context.add_output_metadata(
        {"heartbeat_age_seconds": -1 if age is None else round(age), "threshold_seconds": HEARTBEAT_STALE.total_seconds()}
    )
    if age is not None and age <= HEARTBEAT_STALE.total_seconds():
        if state.get("paged"):
            resolve = _alert("resolve", "alert_routing_sensor is ticking again", age, context.run_id)
            # Through the path that carried the page: that is where its incident is open.
            carried_by = _page(context, alerts, resolve, (state.get("carried_by") or ROUTE_DATA_ENGINEERING,))
            context.add_output_metadata(_carried_metadata(alerts, carried_by))
            if carried_by:
                paged_file.write_text(json.dumps({"paged": False}))
        return
    summary = (
        "alert_routing_sensor has never ticked: no alert can be delivered (is the daemon running and the sensor on?)"
        if age is None
        else f"alert_routing_sensor has not ticked for {age / 60:.0f} min: no alert can be delivered (is the daemon running and the sensor on?)"
    )
    metadata: dict[str, object] = {"heartbeat_age_seconds": -1 if age is None else round(age)}
    if not state.get("paged"):
        carried_by = _page(context, alerts, _alert("trigger", summary, age, context.run_id), PATHS)
        metadata |= _carried_metadata(alerts, carried_by)
        if carried_by:
            paged_file.parent.mkdir(parents=True, exist_ok=True)
            paged_file.write_text(json.dumps({"paged": True, "carried_by": carried_by}))
    # A failed step emits no output: what was paged, and how, goes with the failure.
    raise dg.Failure(description=summary, metadata=metadata)


@dg.job(
    executor_def=dg.in_process_executor,
    tags=max_runtime_tags(NO_SPARK_RUN, spark=False),
    description="Self-test of the alert path: is alert_routing_sensor ticking?",
)
def alert_path_self_test_job():
    check_alert_path()


alert_path_self_test_schedule = dg.ScheduleDefinition(
    name="alert_path_self_test_schedule",
    job=alert_path_self_test_job,
    cron_schedule="*/15 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 15 minutes: page if the alert path itself has gone quiet.",
)
