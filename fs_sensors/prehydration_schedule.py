"""`prehydration_schedule` (hourly) and `prehydration_sensor` (features the online store projects were written).

Both launch `prehydration_job` (`device_objects`, then `device_online_store`, then the lag and
key-count checks). The job's runs carry one concurrency key, limited to 1 in
`dagster_home/dagster.yaml`, so a sensor run and a scheduled run never overlap: the second waits in
the queue, and projects the then-newest snapshot. So while one waits, neither requests another:
the waiting run will project whatever was written meanwhile (on a busy machine, requests for
every features run used to pile up behind the one running).
"""

import dagster as dg

from fs_assets.features.assets import device_features_1d
from fs_assets.ontology.assets import VECTOR_SOURCES
from fs_checks.online_checks import CHECK_KEY_COUNT, CHECK_LAG, ONLINE_STORE
from fs_domain.run_limits import PREHYDRATION_RUN, max_runtime_tags
from fs_sensors.run_queue import run_waiting

PREHYDRATION_CONCURRENCY_TAGS = {"fs/concurrency_key": "prehydration"}

prehydration_job = dg.define_asset_job(
    "prehydration_job",
    selection=dg.AssetSelection.assets("device_objects", "device_online_store").without_checks()
    | dg.AssetSelection.checks(dg.AssetCheckKey(ONLINE_STORE, CHECK_LAG), dg.AssetCheckKey(ONLINE_STORE, CHECK_KEY_COUNT)),
    executor_def=dg.in_process_executor,
    tags=PREHYDRATION_CONCURRENCY_TAGS | max_runtime_tags(PREHYDRATION_RUN),
    description="Rebuild device_objects from the latest 1-day features and project it into Redis.",
)


@dg.schedule(
    name="prehydration_schedule",
    job=prehydration_job,
    cron_schedule="0 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly pre-hydration: the online store is never more than an hour behind the offline store.",
)
def prehydration_schedule(context: dg.ScheduleEvaluationContext):
    # A store still catching up has nothing to project: the run would fail on a missing table and
    # page for a fresh start. The freshness checks' start-up grace covers the Device object meanwhile.
    if context.instance.get_latest_materialization_event(device_features_1d.key) is None:
        return dg.SkipReason(f"nothing to project yet: {device_features_1d.key.to_user_string()} was never written")
    if waiting_prehydration(context.instance):
        return dg.SkipReason(WAITING)
    return dg.RunRequest()


WAITING = "a pre-hydration run already waits in the queue: it projects the newest snapshot when it starts"


def waiting_prehydration(instance: dg.DagsterInstance) -> bool:
    """Whether a pre-hydration run is queued and has not started yet."""
    return run_waiting(instance, prehydration_job.name)


# What the online store projects: device_objects (from the 1-day features) and the served models'
# input vectors (from their window sizes' features).
PROJECTED_FEATURES = sorted({device_features_1d.key, *(a.key for a in VECTOR_SOURCES)}, key=lambda k: k.to_user_string())


# Records read per projected asset and tick: only the newest written matters (one run projects the
# newest snapshot), so a burst beyond it costs nothing.
RECORDS_PER_TICK = 100


@dg.sensor(
    job=prehydration_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Pre-hydrates as soon as features the online store projects (1-day windows, served models' windows) are written, "
    "without waiting for the hour.",
)
def prehydration_sensor(context: dg.SensorEvaluationContext):
    # The cursor is the newest materialization seen (its storage id), over every projected asset.
    after = int(context.cursor) if context.cursor else None
    seen = [
        record
        for key in PROJECTED_FEATURES
        for record in context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=RECORDS_PER_TICK
        ).records
    ]
    if not seen:
        return dg.SkipReason("no features materialized since the last look")
    context.update_cursor(str(max(r.storage_id for r in seen)))
    # A run that wrote no window (a day in progress for the 1-day size, or nothing to recompute)
    # leaves the projection as it was: no run for it.
    wrote = [r for r in seen if _wrote_windows(r)]
    if not wrote:
        latest = sorted({r.asset_key.to_user_string() for r in seen})
        return dg.SkipReason(f"{', '.join(latest)} materialized without writing a window")
    if waiting_prehydration(context.instance):
        return dg.SkipReason(WAITING)
    newest = max(wrote, key=lambda r: r.storage_id)
    partition = newest.asset_materialization.partition if newest.asset_materialization else None
    return dg.RunRequest(
        run_key=f"{newest.run_id}:{partition}",
        tags={"fs/trigger": f"{newest.asset_key.to_user_string()} {partition}"},
    )


def _wrote_windows(record: dg.EventLogRecord) -> bool:
    written = record.asset_materialization.metadata.get("rows_written") if record.asset_materialization else None
    return written is None or written.value != 0
