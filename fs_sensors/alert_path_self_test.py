"""`alert_path_self_test_schedule` (every 15 minutes): pages when the alert path itself went quiet.

`alert_routing_sensor` leaves a heartbeat at every tick (every 30 s while the daemon runs it). If
the heartbeat is older than `HEARTBEAT_STALE` (the daemon is down, the sensor was stopped, or
every tick crashes), nothing would ever page about anything; this job pages directly through the
sink, once per outage, and resolves when the heartbeat is back.
"""

import json
import time
from datetime import timedelta

import dagster as dg

from fs_resources.alerts import ROUTE_DATA_ENGINEERING, Alert, AlertSinkResource

HEARTBEAT_STALE = timedelta(minutes=10)
SELF_TEST_KEY = "alert_path|alert_routing_sensor|heartbeat"


def _paged_file(alerts: AlertSinkResource):
    return alerts.heartbeat_file().with_name("alert_path_self_test.json")


def _alert(action: str, summary: str, age: float | None, run_id: str) -> Alert:
    return Alert(
        SELF_TEST_KEY, action, ROUTE_DATA_ENGINEERING, "error", "high" if action == "trigger" else "low", summary,
        "alert_routing_sensor", None, "alert_path_heartbeat", None if age is None else round(age), HEARTBEAT_STALE.total_seconds(),
        run_id, "", time.time(),
    )  # fmt: skip


@dg.op(description="Page when alert_routing_sensor has not ticked for 10 minutes; resolve when it ticks again.")
def check_alert_path(context: dg.OpExecutionContext, alerts: AlertSinkResource) -> None:
    last = alerts.last_beat()
    age = None if last is None else time.time() - last
    paged_file = _paged_file(alerts)
    paged = paged_file.exists() and json.loads(paged_file.read_text()).get("paged", False)
    context.add_output_metadata(
        {"heartbeat_age_seconds": -1 if age is None else round(age), "threshold_seconds": HEARTBEAT_STALE.total_seconds()}
    )
    if age is not None and age <= HEARTBEAT_STALE.total_seconds():
        if paged and alerts.deliver(
            _alert("resolve", "alert_routing_sensor is ticking again", age, context.run_id), log=context.log.warning
        ):
            paged_file.write_text(json.dumps({"paged": False}))
        return
    summary = (
        "alert_routing_sensor has never ticked: no alert can be delivered (is the daemon running and the sensor on?)"
        if age is None
        else f"alert_routing_sensor has not ticked for {age / 60:.0f} min: no alert can be delivered (is the daemon running and the sensor on?)"
    )
    if not paged and alerts.deliver(_alert("trigger", summary, age, context.run_id), log=context.log.warning):
        paged_file.parent.mkdir(parents=True, exist_ok=True)
        paged_file.write_text(json.dumps({"paged": True}))
    raise dg.Failure(description=summary)


@dg.job(executor_def=dg.in_process_executor, description="Self-test of the alert path: is alert_routing_sensor ticking?")
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
