"""Dagster freshness policies built from the domain's SLAs (`fs_domain.slas`), one way for every asset.

They give each asset its freshness status in the UI and never page: a policy's state changes are
not check evaluations, and the alert router reads only those and run failures. What pages on a
clock is its data-time check (`fs_checks.data_freshness_checks`), which judges only windows that
have closed; a policy looks at when the asset was last written, whatever the partition.
"""

from datetime import timedelta

import dagster as dg

from fs_domain.slas import DAILY_MONITORING_DUE_HOUR_UTC, Sla


def freshness_policy(sla: Sla) -> dg.FreshnessPolicy:
    """Fail past the SLA's alert lag, warn past its target (when it has one)."""
    return dg.FreshnessPolicy.time_window(fail_window=sla.alert, warn_window=sla.target)


# A daily monitoring partition is due by its hour the next morning, covering the whole day before.
DAILY_MONITORING_FRESHNESS = dg.FreshnessPolicy.cron(
    deadline_cron=f"0 {DAILY_MONITORING_DUE_HOUR_UTC} * * *", lower_bound_delta=timedelta(hours=24)
)
