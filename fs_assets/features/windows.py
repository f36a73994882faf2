"""Tumbling windows aligned to midnight UTC: a reading at exactly a boundary opens the later window."""

from datetime import UTC, datetime

from pyspark.sql import Column
from pyspark.sql import functions as F

MICROS_PER_MINUTE = 60_000_000


def window_end(start: Column, minutes: int) -> Column:
    """The end (exclusive) of the window of `minutes` that begins at `start`."""
    return F.timestamp_micros(F.unix_micros(start) + F.lit(minutes * MICROS_PER_MINUTE))


def window_start(ts: Column, minutes: int) -> Column:
    micros = F.unix_micros(ts)
    size = minutes * MICROS_PER_MINUTE
    # Integer arithmetic on microseconds: exact, and aligned to the epoch, hence to every UTC midnight.
    return F.timestamp_micros(micros - F.pmod(micros, F.lit(size)))


def closed_until(at: datetime, minutes: int) -> datetime:
    """The start of the window of `minutes` still open at `at`: every reading before it is in a closed window."""
    micros = round(at.timestamp() * 1_000_000)
    size = minutes * MICROS_PER_MINUTE
    return datetime.fromtimestamp((micros - micros % size) / 1_000_000, tz=UTC)


def minutes_since(ts: Column, start: Column) -> Column:
    """Minutes from `start` to `ts`, the x of every slope (bounded by the window, so never forward-looking)."""
    return (F.unix_micros(ts) - F.unix_micros(start)) / F.lit(float(MICROS_PER_MINUTE))


def with_window(readings, minutes: int):
    """Readings tagged with `window_start` and `minutes_offset` for windows of `minutes`."""
    return readings.withColumn("window_start", window_start(F.col("ts"), minutes)).withColumn(
        "minutes_offset", minutes_since(F.col("ts"), F.col("window_start"))
    )
