"""Monitoring: daily anomaly scores and drift reports of every model, with the checks on them (drift routes to ML)."""

import dagster as dg

from fs_assets.monitoring.assets import monitoring_assets
from fs_checks.drift_checks import drift_checks
from fs_checks.score_checks import score_checks

defs = dg.Definitions(assets=monitoring_assets, asset_checks=[*drift_checks, *score_checks])
