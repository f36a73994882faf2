"""Monitoring: daily anomaly scores and drift reports, with the drift checks that route to ML."""

import dagster as dg

from fs_assets.monitoring.assets import monitoring_assets
from fs_checks.drift_checks import drift_checks

defs = dg.Definitions(assets=monitoring_assets, asset_checks=drift_checks)
