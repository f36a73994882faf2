"""Each site's newest clean reading: the clock that pages when one gateway falls silent.

A site reports through one gateway. When that gateway stops, the fleet's newest reading stays
fresh (the other sites keep it so), and the first sign downstream is the coverage of the next
15-minute window, minutes after it closes and a clean run and a features run later. The clean step
already counts the rows of its days; the same pass groups them by site, so each clean run knows
every site's newest reading at no extra scan, and records in its metadata the sites lagging the
fleet's newest by at least `LAGGING` (`LAGGING_SITES_KEY`: site -> newest reading, or "none" for a
site with no reading in the run's days), stalest first. `data_freshness_check` on clean readings
reads them back (no Spark) and pages when the stalest site is past the clean readings' SLA, at the
sensor tick after it crosses, as it does for the whole landing zone.

A site is expected to report while it has a device active, installed by the day, and not inside a
silence declared (`landing/expected_gaps/<day>.csv`) within the SLA before the fleet's newest
reading: a planned outage of every unit of a site pages nobody.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fs_assets.ingest.expected_gaps import declared_during
from fs_domain import slas

LAGGING_SITES_KEY = "lagging_sites"
# A third of the SLA: gateways that upload a minute or two apart are not listed on every run, and a
# site is listed long before it can page.
LAGGING = timedelta(minutes=5)
# At most this many sites are recorded, the stalest first: enough to name a failing region, small
# enough for every clean run's metadata.
MAX_RECORDED = 200


def expected_sites(registry: DataFrame, day: str, excused: Iterable[str]) -> DataFrame:
    """The sites (`site_id`) with a device that ought to report on `day`: active, installed by then,
    not among the `excused` (inside a declared silence)."""
    devices = registry.where((F.col("status") == "active") & (F.col("install_date") <= F.lit(day).cast("date")))
    if excused := sorted(set(excused)):
        devices = devices.where(~F.col("device_id").isin(excused))
    return devices.select("site_id").distinct()


def excused_devices(gaps: pd.DataFrame, fleet_newest: datetime) -> set[str]:
    """Devices inside a declared silence at some time within the SLA before the fleet's newest reading
    (a UTC time; Spark hands it over without its zone)."""
    at = fleet_newest if fleet_newest.tzinfo else fleet_newest.replace(tzinfo=UTC)
    return set(declared_during(gaps, at - slas.CLEAN_READINGS.alert, at + timedelta(minutes=1)))


def lagging_sites(newest: dict[str, datetime], expected: Iterable[str], fleet_newest: datetime | None) -> dict[str, str]:
    """Site -> its newest reading (ISO, or "none"), for the expected sites at least `LAGGING` behind
    the fleet's newest reading, stalest first, at most `MAX_RECORDED`."""
    if fleet_newest is None:
        return {}
    behind = {site: newest.get(site) for site in expected if site is not None}
    behind = {site: at for site, at in behind.items() if at is None or fleet_newest - at >= LAGGING}
    stalest = sorted(behind.items(), key=lambda item: (item[1] is not None, item[1] or fleet_newest, item[0]))
    return {site: at.isoformat() if at else "none" for site, at in stalest[:MAX_RECORDED]}
