"""Where data is missing, the store says so instead of carrying on with a plausible wrong answer."""

from datetime import datetime, timezone

import dagster as dg
import pytest

from fs_assets.training.assets import training_dataset
from fs_domain.models import DEVICE_HEALTH_1D
from fs_domain.tables import MAINTENANCE_TABLE, REGISTRY_TABLE
from fs_resources.delta import DeltaCommitNotFound, DeltaTables
from fs_resources.feature_store import FeatureStoreResource
from fs_resources.spark import DeltaSparkResource
from tests.feature_tables import windows_frame, write_windows

pytestmark = pytest.mark.integration

UTC = timezone.utc


def test_training_dataset_refuses_to_label_without_maintenance_events(spark, data_root, instance):
    """Without the maintenance events every label would be 0: the run fails and says which asset to run."""
    write_windows(spark, windows_frame([("dev-1", datetime(2026, 1, 5, tzinfo=UTC), 1440)]))
    delta = DeltaTables(spark=DeltaSparkResource())
    delta.overwrite(
        spark.createDataFrame(
            [("dev-1", "site-1", "m", "R404A", None, "active")],
            "device_id string, site_id string, model string, refrigerant string, install_date date, status string",
        ),
        REGISTRY_TABLE,
    )
    assert not delta.exists(MAINTENANCE_TABLE)
    result = dg.materialize(
        [training_dataset],
        partition_key=DEVICE_HEALTH_1D.name,
        instance=instance,
        raise_on_error=False,
        resources={"spark": DeltaSparkResource(), "delta": delta, "feature_store": FeatureStoreResource()},
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "maintenance_events" in failure.step_failure_data.error.message + str(failure.step_failure_data.user_failure_data)
    assert not delta.exists(f"training_datasets/v1/{DEVICE_HEALTH_1D.name}")


def test_a_write_that_cannot_find_its_own_commit_raises(spark, data_root, monkeypatch):
    """Reporting another writer's commit as ours would show wrong versions and row counts."""
    from fs_resources import delta as delta_module

    delta = DeltaTables(spark=DeltaSparkResource())
    frame = spark.createDataFrame([(1,)], "x int")
    delta.overwrite(frame, "commit_lookup")
    monkeypatch.setattr(delta_module, "COMMIT_LOOKBACK", 0)
    with pytest.raises(DeltaCommitNotFound, match="commit_lookup"):
        delta.overwrite(frame, "commit_lookup")
