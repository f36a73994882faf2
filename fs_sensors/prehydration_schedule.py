"""`prehydration_schedule` (hourly) and `prehydration_sensor` (a new day of 1-day features landed).

Both launch `prehydration_job` (`device_objects`, then `device_online_store`, then the lag and
key-count checks). The job's runs carry one concurrency key, limited to 1 in
`dagster_home/dagster.yaml`, so a sensor run and a scheduled run never overlap: the second waits in
the queue, and projects the then-newest snapshot.
"""

import dagster as dg

from fs_checks.online_checks import CHECK_KEY_COUNT, CHECK_LAG, ONLINE_STORE

PREHYDRATION_CONCURRENCY_TAGS = {"fs/concurrency_key": "prehydration"}

prehydration_job = dg.define_asset_job(
    "prehydration_job",
    selection=dg.AssetSelection.assets("device_objects", "device_online_store").without_checks()
    | dg.AssetSelection.checks(dg.AssetCheckKey(ONLINE_STORE, CHECK_LAG), dg.AssetCheckKey(ONLINE_STORE, CHECK_KEY_COUNT)),
    executor_def=dg.in_process_executor,
    tags=PREHYDRATION_CONCURRENCY_TAGS,
    description="Rebuild device_objects from the latest 1-day features and project it into Redis.",
)

prehydration_schedule = dg.ScheduleDefinition(
    name="prehydration_schedule",
    job=prehydration_job,
    cron_schedule="0 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly pre-hydration: the online store is never more than an hour behind the offline store.",
)


@dg.asset_sensor(
    asset_key=dg.AssetKey("device_features_1d"),
    job=prehydration_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Pre-hydrates as soon as a device_features_1d partition is written, without waiting for the hour.",
)
def prehydration_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    materialization = asset_event.asset_materialization
    partition = materialization.partition if materialization else None
    written = materialization.metadata.get("rows_written") if materialization else None
    if written is not None and written.value == 0:
        # A run of a day in progress, or one that found no window to recompute: the snapshot would not change.
        return dg.SkipReason(f"device_features_1d {partition} was materialized without writing a window")
    return dg.RunRequest(run_key=f"{asset_event.run_id}:{partition}", tags={"fs/trigger": f"device_features_1d {partition}"})
