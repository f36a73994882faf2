"""Freshness checks per DESIGN.md's SLAs, as asset checks so that alerts can route them.

For the daily assets these look at the most recent partition (today's, UTC): a backfill of an
old day writes an old partition and leaves today exactly as stale as it was.
"""

from datetime import timedelta

import dagster as dg

SEVERITY = dg.AssetCheckSeverity.ERROR

freshness_checks = [
    # Clean readings: at most 15 minutes behind the landing zone.
    *dg.build_last_update_freshness_checks(assets=["clean_sensor_readings"], lower_bound_delta=timedelta(minutes=15), severity=SEVERITY),
    # Features: alert when more than 45 minutes behind.
    *dg.build_last_update_freshness_checks(
        assets=["device_features_15m", "device_features_1h", "device_features_1d"], lower_bound_delta=timedelta(minutes=45), severity=SEVERITY
    ),
    # Online store: pre-hydration lag above 90 minutes.
    *dg.build_last_update_freshness_checks(assets=["device_objects", "device_online_store"], lower_bound_delta=timedelta(minutes=90), severity=SEVERITY),
    # Daily monitoring: today's report and scores by 03:00 UTC.
    *dg.build_time_partition_freshness_checks(assets=["anomaly_scores", "feature_drift_report"], deadline_cron="0 3 * * *", severity=dg.AssetCheckSeverity.WARN),
]
