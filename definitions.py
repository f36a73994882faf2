"""The code location: every asset, check, job, sensor and resource of the device feature store."""

import warnings

import dagster as dg

# single_run backfill policies and observable source assets are marked beta in dagster 1.13;
# they are pinned with the version, so the warning on every import is noise in run logs.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
# The freshness check builders are superseded by FreshnessPolicy, which we attach too; the checks
# stay because they look at the latest partition (a backfilled old day does not count as fresh)
# and produce check evaluations that alert_routing_sensor routes like every other check.
warnings.filterwarnings("ignore", category=dg.SupersessionWarning)

from fs_assets.features.assets import WINDOW_SPECS, feature_assets  # noqa: E402
from fs_assets.features.backfill_preview import backfill_preview_job  # noqa: E402
from fs_assets.ingest.assets import clean_sensor_readings, device_registry, maintenance_events, raw_sensor_readings  # noqa: E402
from fs_assets.monitoring.assets import monitoring_assets  # noqa: E402
from fs_assets.ontology.assets import ontology_assets  # noqa: E402
from fs_assets.training.assets import training_assets  # noqa: E402
from fs_checks.feature_checks import build_feature_checks  # noqa: E402
from fs_checks.drift_checks import drift_checks  # noqa: E402
from fs_checks.freshness_checks import freshness_checks  # noqa: E402
from fs_checks.ingest_checks import ingest_checks  # noqa: E402
from fs_checks.online_checks import online_checks  # noqa: E402
from fs_resources.alerts import AlertSinkResource  # noqa: E402
from fs_resources.delta import DeltaTables  # noqa: E402
from fs_resources.feature_store import FeatureStoreResource  # noqa: E402
from fs_resources.redis_store import RedisResource  # noqa: E402
from fs_resources.spark import DeltaSparkResource  # noqa: E402
from fs_sensors.alert_routing_sensor import alert_routing_sensor  # noqa: E402
from fs_sensors.feature_automation_sensor import feature_automation_sensor  # noqa: E402
from fs_sensors.freshness_checks_sensor import freshness_checks_sensor  # noqa: E402
from fs_sensors.landing_zone_sensor import clean_readings_job, landing_zone_sensor, registry_job  # noqa: E402
from fs_sensors.maintenance_schedule import maintenance_schedule, table_maintenance_job  # noqa: E402
from fs_sensors.online_store_schedules import online_store_watch_job, online_store_watch_schedule, reconciliation_job, reconciliation_schedule  # noqa: E402
from fs_sensors.prehydration_schedule import prehydration_job, prehydration_schedule, prehydration_sensor  # noqa: E402

feature_checks = [check for spec in WINDOW_SPECS for check in build_feature_checks(spec.asset_name, spec.minutes)]

defs = dg.Definitions(
    assets=[raw_sensor_readings, device_registry, maintenance_events, clean_sensor_readings, *feature_assets, *training_assets, *monitoring_assets, *ontology_assets],
    asset_checks=[*ingest_checks, *feature_checks, *drift_checks, *online_checks, *freshness_checks],
    jobs=[clean_readings_job, registry_job, prehydration_job, reconciliation_job, online_store_watch_job, table_maintenance_job, backfill_preview_job],
    schedules=[prehydration_schedule, reconciliation_schedule, online_store_watch_schedule, maintenance_schedule],
    sensors=[landing_zone_sensor, feature_automation_sensor, prehydration_sensor, freshness_checks_sensor, alert_routing_sensor],
    # Steps of a run share one process and so one Spark session (a JVM start costs seconds).
    executor=dg.in_process_executor,
    resources={
        "spark": DeltaSparkResource(),
        "delta": DeltaTables(),
        "feature_store": FeatureStoreResource(),
        "redis": RedisResource(),
        "alerts": AlertSinkResource(),
    },
)
