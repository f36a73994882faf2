"""How far behind each stage may fall (DESIGN.md, seed 001): one home for every SLA.

Assets turn these into Dagster freshness policies (the UI's status) and the data-time freshness
checks (what pages) judge against the same values, so a policy and its check can never disagree.
"""

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Sla:
    """A lag target (warn past it, if set) and the lag past which on-call is paged."""

    alert: timedelta
    target: timedelta | None = None


# Clean readings at most 15 minutes behind the landing zone.
CLEAN_READINGS = Sla(alert=timedelta(minutes=15))
# Features at most 30 minutes after clean readings; alert when more than 45 minutes behind now.
FEATURES = Sla(target=timedelta(minutes=30), alert=timedelta(minutes=45))
# The Device object and its Redis projection: pre-hydration within 1 h, alert past 90 minutes. The
# hour is the hourly schedule's bound, which a healthy projection reaches each hour by a run's length.
DEVICE_OBJECT = Sla(target=timedelta(minutes=60), alert=timedelta(minutes=90))

# The daily monitoring assets (scores, drift) judge a complete day: yesterday's partition is due
# by this hour (UTC), once the last landing files and their features are in.
DAILY_MONITORING_DUE_HOUR_UTC = 3
