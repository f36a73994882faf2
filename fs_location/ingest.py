"""Ingest: the landing zone to clean readings, with the sensor that launches a day's run."""

import dagster as dg

from fs_assets.ingest.assets import clean_sensor_readings, device_registry, maintenance_events, raw_sensor_readings
from fs_checks.ingest_checks import ingest_checks
from fs_checks.landing_checks import landing_checks
from fs_sensors.landing_zone_sensor import clean_readings_job, landing_zone_sensor, registry_job

defs = dg.Definitions(
    assets=[raw_sensor_readings, device_registry, maintenance_events, clean_sensor_readings],
    asset_checks=[*ingest_checks, *landing_checks],
    jobs=[clean_readings_job, registry_job],
    sensors=[landing_zone_sensor],
)
