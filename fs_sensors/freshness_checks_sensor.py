"""`freshness_checks_sensor`: runs the freshness checks, run-based and by data time, when their answer may have changed."""

import dagster as dg

from fs_checks.data_freshness_checks import data_time_freshness_checks
from fs_checks.freshness_checks import freshness_checks

freshness_checks_sensor = dg.build_sensor_for_freshness_checks(
    freshness_checks=[*freshness_checks, data_time_freshness_checks],
    name="freshness_checks_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
