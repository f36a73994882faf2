"""The code location: each domain's definitions (`fs_location`) merged with the resources they share."""

import warnings

import dagster as dg

# single_run backfill policies and observable source assets are marked beta in dagster 1.13, and
# partitioned check specs preview; they are pinned with the version, so the warning on every import
# is noise in run logs. Nothing superseded or deprecated is used: those warnings stay on.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

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
