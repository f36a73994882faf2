"""The code location: every asset, check, job, sensor and resource of the device feature store."""

import dagster as dg

from fs_assets.features.assets import WINDOW_SPECS, feature_assets
from fs_assets.ingest.assets import clean_sensor_readings, device_registry, raw_sensor_readings
from fs_checks.feature_checks import build_feature_checks
from fs_checks.ingest_checks import ingest_checks
from fs_resources.delta import DeltaTables
from fs_resources.feature_store import FeatureStoreResource
from fs_resources.redis_store import RedisResource
from fs_resources.spark import DeltaSparkResource
from fs_sensors.landing_zone_sensor import clean_readings_job, landing_zone_sensor, registry_job

feature_checks = [check for spec in WINDOW_SPECS for check in build_feature_checks(spec.asset_name, spec.minutes)]

defs = dg.Definitions(
    assets=[raw_sensor_readings, device_registry, clean_sensor_readings, *feature_assets],
    asset_checks=[*ingest_checks, *feature_checks],
    jobs=[clean_readings_job, registry_job],
    sensors=[landing_zone_sensor],
    # Steps of a run share one process and so one Spark session (a JVM start costs seconds).
    executor=dg.in_process_executor,
    resources={
        "spark": DeltaSparkResource(),
        "delta": DeltaTables(),
        "feature_store": FeatureStoreResource(),
        "redis": RedisResource(),
    },
)
