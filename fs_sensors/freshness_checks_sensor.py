"""`freshness_checks_sensor`: runs the freshness checks, run-based and by data time, when their answer may have changed."""

import dagster as dg

from fs_checks.data_freshness_checks import data_time_freshness_checks
from fs_checks.freshness_checks import freshness_checks

# A check that fails carries no "fresh until" time, so the builder requests it again on every tick:
# each request is a run with its own Spark driver, holding one of the two run slots for about a
# minute. Measured under the design fleet's live load (bench/live_freshness.py) these runs took a
# fifth of the slots and the ingest and feature runs waited behind them; every five minutes is
# finer than the 15-minute SLA needs, and the pipeline's runs leave the queue first.
FRESHNESS_CHECK_RUN_TAGS = {"dagster/priority": "-1"}

freshness_checks_sensor = dg.build_sensor_for_freshness_checks(
    freshness_checks=[*freshness_checks, data_time_freshness_checks],
    name="freshness_checks_sensor",
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    tags=FRESHNESS_CHECK_RUN_TAGS,
)
