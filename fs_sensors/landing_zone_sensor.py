"""`landing_zone_sensor`: ingest exactly the days whose landing files are new or changed.

The cursor maps each landing partition to a fingerprint of its files (names, sizes, modification
times). A day whose fingerprint moved (a new file, a late file for a past day, a rewritten file)
gets one run; the run key carries the fingerprint, so the same file set is never processed twice.
A changed device registry gets a registry run.

Verdicts that can change are judged again by clean runs (`fs_assets.ingest.rejudgement`): after a
registry run that learned devices with quarantined readings, each day it names
(`days_to_rejudge`) gets a clean run; and a recent day whose clean run left readings stamped
ahead gets one once their time has come (`rejudge_due_at`).

A failed ingest run is retried by Dagster (`dagster/max_retries` on the job, `run_retries` in
dagster.yaml). When the retries are spent too, the sensor requests the day again after a
doubling pause (at most `MAX_REREQUESTS` times per file set), so a day whose cause of failure was
fixed (a poison file removed, a registry repaired) is ingested without anyone re-launching it.
"""

import json
import time
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from fs_assets.ingest import landing, rejudgement
from fs_assets.partitions import daily_partitions
from fs_domain.run_limits import CLEAN_READINGS_RUN, REGISTRY_RUN, max_runtime_tags
from fs_resources import settings
from fs_resources.filesystem import filesystem_for
from fs_sensors.run_queue import run_waiting

# Retries of a failed ingest run by Dagster's run-retry daemon, before the sensor's own re-requests.
INGEST_RETRY_TAGS = {"dagster/max_retries": "2", "dagster/retry_strategy": "ALL_STEPS"}
# Clean readings have the tightest SLA (15 minutes) and every later stage waits on them: their runs
# leave the run queue before any other (the default priority is 0).
INGEST_PRIORITY_TAGS = {"dagster/priority": "1"}
# A past day's run (a backlog after a fresh start or an outage, late files, re-judgement) is not on
# the clocks' path: it leaves the queue after the current day's, where in request order today's
# next run waited behind every backlog day and its clock paged meanwhile.
PAST_DAY_PRIORITY_TAGS = {"dagster/priority": "0"}
MAX_REREQUESTS = 5
REREQUEST_PAUSE = timedelta(minutes=5)
RERUNS_CURSOR_KEY = "__reruns__"

clean_readings_job = dg.define_asset_job(
    "clean_readings_job",
    # A hung run is ended as failed at its limit and retried like a killed one.
    tags=INGEST_RETRY_TAGS | INGEST_PRIORITY_TAGS | max_runtime_tags(CLEAN_READINGS_RUN),
    selection=dg.AssetSelection.assets("clean_sensor_readings").without_checks()
    | dg.AssetSelection.checks_for_assets("clean_sensor_readings"),
    # One process, one Spark session per run: the checks reuse the session the asset started.
    executor_def=dg.in_process_executor,
    description="Ingest landing-zone days into clean_sensor_readings (and its checks).",
)
registry_job = dg.define_asset_job(
    "device_registry_job",
    selection=dg.AssetSelection.assets("device_registry"),
    executor_def=dg.in_process_executor,
    tags=INGEST_RETRY_TAGS | max_runtime_tags(REGISTRY_RUN),
)

REGISTRY_CURSOR_KEY = "__registry__"
REJUDGE_CURSOR_KEY = "__rejudge__"
# Readings stamped ahead lie in the day their file landed in: only the last days can still come due.
REJUDGE_DUE_DAYS = 2


def _registry_fingerprint() -> str | None:
    folder, name = settings.registry_csv_path().rsplit("/", 1)
    found = [f for f in filesystem_for(folder).list(folder) if f.name == name]
    return f"{found[0].size}-{found[0].mtime_ns}" if found else None


@dg.sensor(
    name="landing_zone_sensor",
    jobs=[clean_readings_job, registry_job],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a clean_sensor_readings run for each landing day whose files changed.",
)
def landing_zone_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    seen: dict = json.loads(context.cursor) if context.cursor else {}
    reruns: dict[str, int] = seen.pop(RERUNS_CURSOR_KEY, {})
    requests: list[dg.RunRequest] = []
    registry = _registry_fingerprint()
    if registry and seen.get(REGISTRY_CURSOR_KEY) != registry:
        requests.append(dg.RunRequest(run_key=f"registry:{registry}", job_name=registry_job.name))
        seen[REGISTRY_CURSOR_KEY] = registry
    rejudge: dict = seen.pop(REJUDGE_CURSOR_KEY, {})
    learned = context.instance.get_latest_materialization_event(dg.AssetKey("device_registry"))
    if learned is None:
        # Cleaning needs the registry: hold the days (their cursors stay put) until it exists.
        if requests:
            context.log.info("device_registry has never been materialized; ingesting landing days after it is")
        seen[RERUNS_CURSOR_KEY] = reruns
        seen[REJUDGE_CURSOR_KEY] = rejudge
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))
    valid = set(daily_partitions.get_partition_keys())
    root = settings.landing_root()
    fs = filesystem_for(root)
    # Newest day first: runs of one priority leave the queue in the order they were requested, and
    # the freshness clocks follow the newest data, so a store catching up (a fresh instance, a
    # restart after hours down) is current again after one run instead of after the whole backlog.
    for day in sorted(landing.landing_partition_keys(fs, root), reverse=True):
        if day not in valid:
            context.log.warning(
                f"landing folder date={day} is outside the partitions ({daily_partitions.start:%Y-%m-%d} .. today); skipped"
            )
            continue
        files = landing.list_landing_files(fs, root, day)
        if not files:
            continue
        fp = landing.fingerprint(files)
        if seen.get(day) != fp and _waiting_run(context.instance, day):
            # A run of the day still in the queue lists the landing files when it starts, so it will
            # clean these too; one more request per new file would only flood the queue.
            seen[day] = fp
        elif seen.get(day) != fp:
            requests.append(
                dg.RunRequest(
                    run_key=f"{day}:{fp}",
                    partition_key=day,
                    job_name=clean_readings_job.name,
                    tags={"landing_fingerprint": fp} | _priority(day),
                )
            )
            seen[day] = fp
            reruns.pop(day, None)
        elif (rerun := _rerequest_failed_day(context.instance, day, fp, reruns.get(day, 0))) is not None:
            requests.append(rerun)
            reruns[day] = reruns.get(day, 0) + 1
    requests += _rejudge_requests(context, learned, rejudge, valid, {r.partition_key for r in requests if r.partition_key})
    seen[RERUNS_CURSOR_KEY] = reruns
    seen[REJUDGE_CURSOR_KEY] = rejudge
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))


def _rejudge_requests(
    context: dg.SensorEvaluationContext, learned: dg.EventLogEntry, cursor: dict, valid: set[str], requested: set[str]
) -> list[dg.RunRequest]:
    """Clean runs of the days whose quarantined verdicts can change now: days the latest registry run
    names, and recent days whose readings stamped ahead have come due. A day already requested, or
    whose run waits in the queue, needs none: that run judges them again."""
    due: list[tuple[str, str]] = []
    # A registry materialization is known by its run and time (a reported one has no run).
    mark = f"{learned.run_id}@{learned.timestamp}"
    if mark != cursor.get("registry"):
        metadata = learned.asset_materialization.metadata if learned.asset_materialization else {}
        days = getattr(metadata.get(rejudgement.DAYS_TO_REJUDGE_KEY), "value", None) or []
        due += [(day, f"registry:{mark}") for day in days]
        cursor["registry"] = mark
    now = datetime.now(UTC)
    handled: dict[str, str] = cursor.get("due", {})
    recent = [(now.date() - timedelta(days=i)).isoformat() for i in range(REJUDGE_DUE_DAYS)]
    for day in recent:
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("clean_sensor_readings"), asset_partitions=[day]), limit=1
        ).records
        at = (
            records[0].asset_materialization.metadata.get(rejudgement.REJUDGE_DUE_KEY)
            if records and records[0].asset_materialization
            else None
        )
        at = getattr(at, "value", None)
        if at and at != "none" and handled.get(day) != at and datetime.fromisoformat(at) <= now:
            due.append((day, f"due:{at}"))
            handled[day] = at
    cursor["due"] = {d: at for d, at in handled.items() if date.fromisoformat(d) >= date.fromisoformat(recent[-1])}
    requests = []
    for day, why in due:
        if day not in valid or day in requested or _waiting_run(context.instance, day):
            continue
        requested.add(day)
        requests.append(
            dg.RunRequest(
                run_key=f"{day}:rejudge:{why}",
                partition_key=day,
                job_name=clean_readings_job.name,
                tags={"fs/rejudge": why} | _priority(day),
            )
        )
    return requests


def _waiting_run(instance: dg.DagsterInstance, day: str) -> bool:
    """Whether a clean run of `day` is queued and has not started (so has not listed its files yet)."""
    return run_waiting(instance, clean_readings_job.name, {"dagster/partition": day})


def _rerequest_failed_day(instance: dg.DagsterInstance, day: str, fp: str, done: int) -> dg.RunRequest | None:
    """A new request for `day` when its latest ingest run failed (retries spent) long enough ago."""
    if done >= MAX_REREQUESTS:
        return None
    records = instance.get_run_records(filters=dg.RunsFilter(job_name=clean_readings_job.name, tags={"dagster/partition": day}), limit=1)
    latest = records[0] if records else None
    if latest is None or latest.dagster_run.status != dg.DagsterRunStatus.FAILURE or latest.end_time is None:
        return None
    if time.time() - latest.end_time < REREQUEST_PAUSE.total_seconds() * 2**done:
        return None
    return dg.RunRequest(
        run_key=f"{day}:{fp}:rerun{done + 1}",
        partition_key=day,
        job_name=clean_readings_job.name,
        tags={"landing_fingerprint": fp, "fs/rerun_of": latest.dagster_run.run_id} | _priority(day),
    )


def _priority(day: str) -> dict[str, str]:
    """The current day's runs keep the ingest priority; a past day's leave the queue after them."""
    return INGEST_PRIORITY_TAGS if day >= datetime.now(UTC).date().isoformat() else PAST_DAY_PRIORITY_TAGS
