"""`freshness_checks_sensor`: runs the freshness checks when their verdict can have changed.

A check is requested when it never ran; when it passed and its `dagster/fresh_until_timestamp`
has come (it can be late now); when it warned and its `escalates_at_timestamp` has come (it can
page now); and when it failed and its asset was written since (it can have recovered). A check
being evaluated is left to finish. Dagster's `build_sensor_for_freshness_checks` does all but the
third: a stage that stalls writes nothing, so its warning would never be judged again and the page
past the alert would never come.

Between those moments a check's answer cannot change, so the sensor can look often (a breach is
judged within one interval of its time) while the runs stay few: about one per clock and SLA
period on a healthy store. The checks read recorded metadata only and start no Spark session, so a
run of them holds a slot for seconds: they leave the queue before the pipeline's runs (behind a
backlog of clean runs a stalled clock waited 15 minutes to be judged, and its page with it).

A fresh instance is catching up with its landing zone, not late: a data clock is judged only once
the sensor has run for the asset's start-up grace (`STARTUP_GRACE`, its upstream alerts added up),
whether or not the asset was written meanwhile (its first writes are the oldest days of the
backlog, hours behind by construction). So `make run` on a fresh clone catches up without a page,
and a stage that never produces anything still pages. The daily monitoring assets are written only once a model has a promoted
reference; until their first write there is no day they owe.
"""

import json
import time
from dataclasses import dataclass

import dagster as dg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from fs_checks.data_freshness_checks import ESCALATES_AT, FRESH_UNTIL, STARTUP_GRACE
from fs_checks.freshness_checks import ALL_FRESHNESS_CHECKS
from fs_domain.run_limits import NO_SPARK_RUN, max_runtime_tags

# Above the ingest runs' priority (fs_sensors.landing_zone_sensor): seconds of work that can page.
FRESHNESS_CHECK_RUN_TAGS = {"dagster/priority": "2"} | max_runtime_tags(NO_SPARK_RUN, spark=False)
SENSOR_INTERVAL_SECONDS = 30


@dataclass(frozen=True)
class LastVerdict:
    """What a check last said: whether it passed, when, and when it can change without a write."""

    passed: bool
    evaluated_at: float
    fresh_until: float | None = None
    escalates_at: float | None = None


def due(last: LastVerdict | None, evaluating: bool, last_written_at: float | None, now: float) -> bool:
    """Whether the check should be judged again at `now`."""
    if evaluating:
        return False
    if last is None:
        return True
    if last.passed:
        return last.fresh_until is None or last.fresh_until <= now
    if last_written_at is not None and last_written_at > last.evaluated_at:
        return True
    return last.escalates_at is not None and last.escalates_at <= now


def judged_yet(asset: str, ever_written: bool, started: float, now: float) -> bool:
    """Whether a check of `asset` may judge at `now`: a data clock once its start-up grace since the
    sensor's first tick has passed; the daily monitoring assets once written."""
    grace = STARTUP_GRACE.get(asset)
    if grace is None:
        return ever_written
    return now >= started + grace.total_seconds()


def _timestamp(metadata: dict, key: str) -> float | None:
    value = metadata.get(key)
    value = getattr(value, "value", value)
    return float(value) if isinstance(value, (int, float)) else None


def _last_verdict(summary) -> tuple[LastVerdict | None, bool]:
    """The last completed verdict of a check's summary record, and whether an evaluation is under way."""
    completed = summary.last_completed_check_execution_record if summary else None
    latest = summary.last_check_execution_record if summary else None
    evaluating = latest is not None and latest.status == AssetCheckExecutionRecordStatus.PLANNED
    if completed is None or completed.event is None or completed.event.asset_check_evaluation is None:
        return None, evaluating
    evaluation = completed.event.asset_check_evaluation
    metadata = dict(evaluation.metadata or {})
    last = LastVerdict(evaluation.passed, completed.event.timestamp, _timestamp(metadata, FRESH_UNTIL), _timestamp(metadata, ESCALATES_AT))
    return last, evaluating


def _still_running(instance: dg.DagsterInstance, run_id: str) -> bool:
    run = instance.get_run_by_id(run_id)
    return run is not None and not run.is_finished


@dg.sensor(
    name="freshness_checks_sensor",
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    asset_selection=dg.AssetSelection.checks(*ALL_FRESHNESS_CHECKS),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Runs the freshness checks when a verdict can have changed: a pass's fresh-until or a warning's "
    "escalation time has come, or a failing check's asset was written.",
)
def freshness_checks_sensor(context: dg.SensorEvaluationContext):
    now = time.time()
    started = json.loads(context.cursor)["started"] if context.cursor else now
    context.update_cursor(json.dumps({"started": started}))
    keys = sorted((spec.key for checks in ALL_FRESHNESS_CHECKS for spec in checks.check_specs), key=lambda k: k.to_user_string())
    summaries = context.instance.event_log_storage.get_asset_check_summary_records(keys)
    requested = []
    for key in keys:
        asset = key.asset_key
        if not judged_yet(asset.to_user_string(), context.instance.get_latest_materialization_event(asset) is not None, started, now):
            continue
        summary = summaries.get(key)
        last, evaluating = _last_verdict(summary)
        # A record left planned by a run that ended without judging does not hold the check back.
        evaluating = evaluating and _still_running(context.instance, summary.last_check_execution_record.run_id)
        written = context.instance.get_latest_materialization_event(key.asset_key) if last and not last.passed else None
        if due(last, evaluating, written.timestamp if written else None, now):
            requested.append(key)
    if not requested:
        return dg.SkipReason("no freshness verdict can have changed since it was judged")
    context.log.info(f"judging {', '.join(k.to_user_string() for k in requested)}")
    return dg.RunRequest(asset_check_keys=requested, tags=FRESHNESS_CHECK_RUN_TAGS)
