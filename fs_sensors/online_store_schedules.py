"""`reconciliation_schedule` (weekly) and `online_store_watch_schedule` (every 15 minutes).

Reconciliation compares online reads with the offline store; it shares pre-hydration's
concurrency key so it never reads a projection half-way through being rewritten. The watch runs
only the lag check (Redis only, no Spark), so a stalled pre-hydration or a Redis restarted empty is
noticed within 15 minutes rather than at the next hourly run.
"""

import dagster as dg

from fs_checks.online_checks import CHECK_LAG, CHECK_RECONCILIATION, ONLINE_STORE
from fs_sensors.prehydration_schedule import PREHYDRATION_CONCURRENCY_TAGS

reconciliation_job = dg.define_asset_job(
    "reconciliation_job",
    selection=dg.AssetSelection.checks(dg.AssetCheckKey(ONLINE_STORE, CHECK_RECONCILIATION)),
    executor_def=dg.in_process_executor,
    tags=PREHYDRATION_CONCURRENCY_TAGS,
    description="Offline vs online: 1,000 random device-window pairs (launch with sample_size: 0 for every device).",
)

reconciliation_schedule = dg.ScheduleDefinition(
    name="reconciliation_schedule",
    job=reconciliation_job,
    cron_schedule="0 6 * * 1",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Weekly training-serving reconciliation, Mondays 06:00 UTC.",
)

online_store_watch_job = dg.define_asset_job(
    "online_store_watch_job",
    selection=dg.AssetSelection.checks(dg.AssetCheckKey(ONLINE_STORE, CHECK_LAG)),
    executor_def=dg.in_process_executor,
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
