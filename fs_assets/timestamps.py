"""A Python time in a Spark expression: one spelling, exact to the microsecond, whatever the session's
time zone (naive datetimes are UTC, as everywhere in the store)."""

from datetime import UTC, datetime, timedelta

from pyspark.sql import Column
from pyspark.sql import functions as F

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def instant(moment: datetime) -> Column:
    """`moment` as a Spark timestamp literal."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return F.timestamp_micros(F.lit((aware - EPOCH) // timedelta(microseconds=1)))
