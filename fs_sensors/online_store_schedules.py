"""`reconciliation_schedule` (weekly), `online_store_watch_schedule` (every 15 minutes) and
`online_store_refill_sensor` (a watch that found the store empty or expired pre-hydrates at once).

Reconciliation compares online reads with the offline store; it shares pre-hydration's
concurrency key so it never reads a projection half-way through being rewritten. The watch runs
only the lag check (Redis only, no Spark), so a stalled pre-hydration or a Redis restarted empty is
noticed within 15 minutes rather than at the next hourly run; when the watch finds the store empty
(a Redis restarted without its data) or its entries expired, the refill sensor launches
`prehydration_job` instead of leaving readers without answers until the next hour.
"""

import dagster as dg

from fs_assets.features.assets import device_features_1d
from fs_checks.online_checks import CHECK_LAG, CHECK_RECONCILIATION, CHECK_SERVED_SKEW, ONLINE_STORE, REFILL_NEEDED
from fs_domain.run_limits import NO_SPARK_RUN, RECONCILIATION_RUN, max_runtime_tags
from fs_sensors.prehydration_schedule import PREHYDRATION_CONCURRENCY_TAGS, prehydration_job

reconciliation_job = dg.define_asset_job(
    "reconciliation_job",
    selection=dg.AssetSelection.checks(
        dg.AssetCheckKey(ONLINE_STORE, CHECK_RECONCILIATION), dg.AssetCheckKey(ONLINE_STORE, CHECK_SERVED_SKEW)
    ),
    executor_def=dg.in_process_executor,
    tags=PREHYDRATION_CONCURRENCY_TAGS | max_runtime_tags(RECONCILIATION_RUN),
    description="Offline vs online: 1,000 random device-window pairs (launch with sample_size: 0 for every device), "
    "and the values fs-serve logged against the offline features of their windows.",
)


@dg.schedule(
    name="reconciliation_schedule",
    job=reconciliation_job,
    cron_schedule="0 6 * * 1",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Weekly training-serving reconciliation, Mondays 06:00 UTC.",
)
def reconciliation_schedule(context: dg.ScheduleEvaluationContext):
    # Nothing projected yet (a store still catching up): nothing to compare, and no failure to page.
    if context.instance.get_latest_materialization_event(ONLINE_STORE) is None:
        return dg.SkipReason(f"nothing to reconcile yet: {ONLINE_STORE.to_user_string()} was never written")
    return dg.RunRequest()


online_store_watch_job = dg.define_asset_job(
    "online_store_watch_job",
    selection=dg.AssetSelection.checks(dg.AssetCheckKey(ONLINE_STORE, CHECK_LAG)),
    executor_def=dg.in_process_executor,
    tags=max_runtime_tags(NO_SPARK_RUN, spark=False),
    description="Pre-hydration lag, read from Redis.",
)

online_store_watch_schedule = dg.ScheduleDefinition(
    name="online_store_watch_schedule",
    job=online_store_watch_job,
    cron_schedule="*/15 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 15 minutes: is the online store's last complete projection within its lag budget?",
)


@dg.run_status_sensor(
    name="online_store_refill_sensor",
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[online_store_watch_job],
    request_job=prehydration_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Pre-hydrates at once when the 15-minute watch finds the online store empty or expired.",
)
def online_store_refill_sensor(context: dg.RunStatusSensorContext):
    if context.instance.get_latest_materialization_event(device_features_1d.key) is None:
        # A fresh instance: the store is empty because nothing was computed yet, and a refill would
        # fail on the missing features table and page; the first features run pre-hydrates instead.
        return dg.SkipReason("device_features_1d has never been materialized: nothing to pre-hydrate yet")
    run_id = context.dagster_run.run_id
    records = context.instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, limit=100).records
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        refill = (evaluation.metadata or {}).get(REFILL_NEEDED)
        if evaluation.check_name == CHECK_LAG and refill is not None and refill.value:
            return dg.RunRequest(run_key=f"refill:{run_id}", tags={"fs/trigger": f"online store empty or expired (watch run {run_id[:8]})"})
    return dg.SkipReason("the watch found the online store live")
