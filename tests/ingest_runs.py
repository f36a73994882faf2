"""Running the ingest assets for real (dagster.materialize on Spark + Delta) and reading what they wrote."""

from __future__ import annotations

import dagster as dg
from pyspark.sql import functions as F

from fs_assets.ingest.assets import clean_sensor_readings, device_registry
from fs_checks.ingest_checks import ingest_checks
from fs_domain.tables import CLEAN_TABLE, QUARANTINE_TABLE
from fs_resources.delta import DeltaTables
from fs_resources.spark import DeltaSparkResource


def materialize_registry(resources, instance) -> dg.ExecuteInMemoryResult:
    result = dg.materialize([device_registry], resources=resources, instance=instance)
    assert result.success
    return result


def materialize_clean(resources, instance, day: str, raise_on_error: bool = True, with_checks: bool = True) -> dg.ExecuteInMemoryResult:
    """The day's clean readings; the step's own checks (accounting, schema drift) always run, the table checks when asked."""
    return dg.materialize(
        [clean_sensor_readings, *(ingest_checks if with_checks else [])],
        partition_key=day,
        resources=resources,
        instance=instance,
        raise_on_error=raise_on_error,
    )


def materialize_clean_range(resources, instance, first: str, last: str, with_checks: bool = True) -> dg.ExecuteInMemoryResult:
    """A range of days in one run, as a UI backfill with a single-run policy launches it."""
    return dg.materialize(
        [clean_sensor_readings, *(ingest_checks if with_checks else [])],
        resources=resources,
        instance=instance,
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
    )


def metadata(result: dg.ExecuteInMemoryResult) -> dict:
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def checks(result: dg.ExecuteInMemoryResult) -> dict:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def table(spark, name: str):
    return DeltaTables(spark=DeltaSparkResource()).read(name)


def clean_rows(spark, day: str):
    return table(spark, CLEAN_TABLE).where(F.col("reading_date") == day)


def quarantine_rows(spark, day: str):
    return table(spark, QUARANTINE_TABLE).where(F.col("landing_date") == day)


def pipeline_resources(redis_url: str) -> dict:
    """Every resource the assets from ingest to the online store need, on the test's Redis."""
    from fs_resources.feature_store import FeatureStoreResource
    from fs_resources.redis_store import RedisResource

    return {
        "spark": DeltaSparkResource(),
        "delta": DeltaTables(spark=DeltaSparkResource()),
        "feature_store": FeatureStoreResource(),
        "redis": RedisResource(url=redis_url),
    }


def range_tags(first: str, last: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


def ingest_with_features(resources, instance, root, spec, first: str, last: str) -> None:
    """Simulate `spec` into the landing zone under `root`, then registry, clean readings and the three feature sizes.

    The clean step's own accounting check still runs; the table checks on clean readings (tested where
    clean readings are the subject) do not: here clean readings are only the input."""
    from fs_assets.features.assets import feature_assets
    from fs_resources.simulator.fleet import generate

    generate(spec, str(root))
    materialize_registry(resources, instance)
    assert materialize_clean_range(resources, instance, first, last, with_checks=False).success
    assert dg.materialize(feature_assets, resources=resources, instance=instance, tags=range_tags(first, last)).success


def train_and_monitor(resources, instance, first: str, last: str) -> None:
    """Labels, every model's training set, reference snapshot and its promotion, then the days' scores and drift reports."""
    from fs_assets.ingest.assets import maintenance_events
    from fs_assets.monitoring.assets import monitoring_assets
    from fs_assets.training.assets import training_assets
    from fs_domain.models import MODEL_NAMES

    assert dg.materialize([maintenance_events], resources=resources, instance=instance).success
    for model in MODEL_NAMES:
        assert dg.materialize(training_assets, partition_key=model, resources=resources, instance=instance).success
    assert dg.materialize(monitoring_assets, resources=resources, instance=instance, tags=range_tags(first, last)).success
