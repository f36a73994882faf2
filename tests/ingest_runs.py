"""Running the ingest assets for real (dagster.materialize on Spark + Delta) and reading what they wrote."""

from __future__ import annotations

import dagster as dg
from pyspark.sql import functions as F

from fs_assets.ingest.assets import QUARANTINE_TABLE, clean_sensor_readings, device_registry
from fs_checks.ingest_checks import CLEAN_TABLE, ingest_checks
from fs_resources.delta import DeltaTables


def materialize_registry(resources, instance) -> dg.ExecuteInMemoryResult:
    result = dg.materialize([device_registry], resources=resources, instance=instance)
    assert result.success
    return result


def materialize_clean(resources, instance, day: str, raise_on_error: bool = True) -> dg.ExecuteInMemoryResult:
    return dg.materialize([clean_sensor_readings, *ingest_checks], partition_key=day, resources=resources, instance=instance, raise_on_error=raise_on_error)


def materialize_clean_range(resources, instance, first: str, last: str) -> dg.ExecuteInMemoryResult:
    """A range of days in one run, as a UI backfill with a single-run policy launches it."""
    return dg.materialize(
        [clean_sensor_readings, *ingest_checks], resources=resources, instance=instance,
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
    )


def metadata(result: dg.ExecuteInMemoryResult) -> dict:
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def checks(result: dg.ExecuteInMemoryResult) -> dict:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def table(spark, name: str):
    return DeltaTables().read(spark, name)


def clean_rows(spark, day: str):
    return table(spark, CLEAN_TABLE).where(F.col("reading_date") == day)


def quarantine_rows(spark, day: str):
    return table(spark, QUARANTINE_TABLE).where(F.col("landing_date") == day)

