"""Ontology: the `Device` object in Delta and Redis, its pre-hydration, watch and reconciliation."""

import dagster as dg

from fs_assets.ontology.assets import ontology_assets
from fs_checks.online_checks import online_checks
from fs_sensors.online_store_schedules import (
    online_store_refill_sensor,
    online_store_watch_job,
    online_store_watch_schedule,
    reconciliation_job,
    reconciliation_schedule,
)
from fs_sensors.prehydration_schedule import prehydration_job, prehydration_schedule, prehydration_sensor

defs = dg.Definitions(
    assets=ontology_assets,
    asset_checks=online_checks,
    jobs=[prehydration_job, reconciliation_job, online_store_watch_job],
    schedules=[prehydration_schedule, reconciliation_schedule, online_store_watch_schedule],
    sensors=[prehydration_sensor, online_store_refill_sensor],
)
