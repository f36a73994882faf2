"""The code location: each domain's definitions (`fs_location`) merged with the resources they share."""

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

from fs_location import features, ingest, monitoring, ontology, operations, training  # noqa: E402
from fs_resources.alerts import AlertSinkResource  # noqa: E402
from fs_resources.delta import DeltaTables  # noqa: E402
from fs_resources.feature_store import FeatureStoreResource  # noqa: E402
from fs_resources.redis_store import RedisResource  # noqa: E402
from fs_resources.spark import DeltaSparkResource  # noqa: E402

spark = DeltaSparkResource()

defs = dg.Definitions.merge(
    ingest.defs,
    features.defs,
    training.defs,
    monitoring.defs,
    ontology.defs,
    operations.defs,
    dg.Definitions(
        # Steps of a run share one process and so one Spark session (a JVM start costs seconds).
        executor=dg.in_process_executor,
        resources={
            "spark": spark,
            "delta": DeltaTables(spark=spark),
            # FS_FEATURE_SET_VERSION and FS_MODEL_VERSIONS checked now, as the alert settings are.
            "feature_store": FeatureStoreResource.from_environment(),
            "redis": RedisResource(),
            # FS_ONCALL_* settings as dg.EnvVars, checked now: one that cannot work fails the load naming it.
            "alerts": AlertSinkResource.from_environment(),
        },
    ),
)
