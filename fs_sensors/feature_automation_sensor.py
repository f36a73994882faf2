"""`feature_automation_sensor`: evaluates the feature assets' automation conditions.

A rewritten day of clean readings (new or late files) leads to that day's features being
recomputed, and then that day's anomaly scores and drift report; see `FEATURES_AUTOMATION` in
fs_assets/features/assets.py.
"""

import dagster as dg

from fs_domain.run_limits import FEATURES_AUTOMATION_RUN, max_runtime_tags

feature_automation_sensor = dg.AutomationConditionSensorDefinition(
    "feature_automation_sensor",
    target=dg.AssetSelection.groups("features", "monitoring"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    run_tags=max_runtime_tags(FEATURES_AUTOMATION_RUN),
    description="Recomputes a day's features after its clean readings change, and its anomaly scores and drift report after them.",
)
