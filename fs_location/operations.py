"""Operations across domains: freshness checks and their sensor, alert routing and its self-test, table maintenance."""

import dagster as dg

from fs_checks.data_freshness_checks import data_time_freshness_checks
from fs_checks.freshness_checks import freshness_checks
from fs_sensors.alert_path_self_test import alert_path_self_test_job, alert_path_self_test_schedule
from fs_sensors.alert_routing_sensor import alert_routing_sensor
from fs_sensors.freshness_checks_sensor import freshness_checks_sensor
from fs_sensors.maintenance_schedule import maintenance_schedule, table_maintenance_job

defs = dg.Definitions(
    asset_checks=[*freshness_checks, data_time_freshness_checks],
    jobs=[table_maintenance_job, alert_path_self_test_job],
    schedules=[maintenance_schedule, alert_path_self_test_schedule],
    sensors=[freshness_checks_sensor, alert_routing_sensor],
)
