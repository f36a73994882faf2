"""Features: one `Definitions` per window size of the registry, the backfill preview and the
automation that follows late data."""

import dagster as dg

from fs_assets.features.assets import build_feature_asset
from fs_assets.features.backfill_preview import backfill_preview_job
from fs_checks.feature_checks import build_feature_checks
from fs_domain.features import WINDOWS, Window
from fs_sensors.feature_automation_sensor import feature_automation_sensor


def window_definitions(window: Window) -> dg.Definitions:
    """One window size: its asset (carrying the features SLA as its freshness policy) and its checks."""
    return dg.Definitions(assets=[build_feature_asset(window)], asset_checks=build_feature_checks(window))


defs = dg.Definitions.merge(
    *(window_definitions(window) for window in WINDOWS),
    dg.Definitions(jobs=[backfill_preview_job], sensors=[feature_automation_sensor]),
)
