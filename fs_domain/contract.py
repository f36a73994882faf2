"""The landing-zone and clean-readings contract: columns, physical ranges and reason codes.

This module is the one place where a sensor's name, unit and plausible physical range are defined.
The simulator, the landing reader, the cleaning transform, the checks and the docs all read from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Sensor:
    name: str
    unit: str
    description: str
    # Plausible physical range for a refrigeration unit; a value outside it is a sensor or
    # transmission fault, never a real reading, so it becomes NULL with a flag.
    low: float
    high: float


SENSORS: tuple[Sensor, ...] = (
    Sensor("temp_evaporator", "°C", "Evaporator coil temperature", -60.0, 30.0),
    Sensor("temp_condenser", "°C", "Condenser temperature", -20.0, 90.0),
    Sensor("temp_discharge", "°C", "Compressor discharge (or shell) temperature", -20.0, 160.0),
    Sensor("current_compressor", "A", "Compressor motor current", 0.0, 100.0),
    Sensor("pressure_high", "bar", "High-side (discharge) pressure", 0.0, 60.0),
    Sensor("pressure_low", "bar", "Low-side (suction) pressure", 0.0, 30.0),
    Sensor("vibration_compressor", "mm/s RMS", "Compressor vibration velocity", 0.0, 100.0),
)
SENSOR_NAMES: tuple[str, ...] = tuple(s.name for s in SENSORS)
SENSORS_BY_NAME: dict[str, Sensor] = {s.name: s for s in SENSORS}

KEY_COLUMNS: tuple[str, ...] = ("device_id", "ts")
LANDING_COLUMNS: tuple[str, ...] = KEY_COLUMNS + SENSOR_NAMES

# Device ids become Delta values and Redis keys: letters, digits and a few separators only.
DEVICE_ID_REGEX = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}"
DEVICE_ID_PATTERN = re.compile(DEVICE_ID_REGEX)  # use with fullmatch
# The same rule for Spark (Java regex: \z is the very end, `$` would allow a trailing newline).
DEVICE_ID_JAVA_REGEX = rf"^(?:{DEVICE_ID_REGEX})\z"

# A reading stamped further ahead than this is a clock fault, not a reading from the future.
FUTURE_TOLERANCE = timedelta(minutes=10)

LANDING_FORMATS: tuple[str, ...] = (".parquet", ".csv", ".jsonl")


@dataclass(frozen=True)
class FileLimits:
    """What one landing file may hold before it is quarantined whole, as one record naming the limit.

    The defaults leave room for the largest file a 100,000-device fleet sends (an hour of readings,
    6 M rows, about 400 MB as CSV) while keeping any one task's memory bounded.
    JSON values nested deeper than the parser's own limit (1,000 levels) fail that row only.
    """

    max_bytes: int = 1 << 30
    max_rows: int = 10_000_000
    max_line_chars: int = 65_536


# A run that would replace a day of clean readings (or the registry) keeping less than this share
# of its rows (devices) is refused unless told otherwise: a landing folder that vanished, or a
# registry file read half-written, must not silently empty what downstream reads.
MIN_KEPT_SHARE = 0.5


class Reason:
    """Quarantine reason codes (the `reason` column of the quarantine table)."""

    UNREADABLE_FILE = "unreadable_file"
    SCHEMA_MISMATCH = "schema_mismatch"
    MALFORMED_DEVICE_ID = "malformed_device_id"
    UNKNOWN_DEVICE = "unknown_device"
    UNPARSEABLE_TIMESTAMP = "unparseable_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    OUTSIDE_PARTITION = "outside_partition"
    FILE_OVER_LIMIT = "file_over_limit"

    ALL = (
        UNREADABLE_FILE,
        SCHEMA_MISMATCH,
        MALFORMED_DEVICE_ID,
        UNKNOWN_DEVICE,
        UNPARSEABLE_TIMESTAMP,
        FUTURE_TIMESTAMP,
        OUTSIDE_PARTITION,
        FILE_OVER_LIMIT,
    )
    # Verdicts that can change: the registry may learn the device, the clock may reach the reading's
    # time. Rows quarantined for these are judged again (`fs_assets.ingest.rejudgement`); every
    # other reason is final until the file itself changes.
    CAN_CHANGE = (UNKNOWN_DEVICE, FUTURE_TIMESTAMP)


@dataclass(frozen=True)
class QuarantineShare:
    """How much of a day's landing rows one reason may hold in the quarantine before a check warns
    (`warn`) or pages (`error`). A day with fewer raw rows than `min_rows` is not judged: a few
    foreign readings in the first minutes of a day are a large share of almost nothing."""

    warn: float
    error: float
    min_rows: int


# A healthy simulated day stays well below the warning: its foreign readings (unknown and malformed
# ids) are about 0.4 % of a 5-device fleet's rows, 1.9 % of a lone device's, 0.01 % of 200 devices'.
# A registry that lost a site, or a gateway whose clock runs ahead, crosses it; a registry read
# half-written, or a clock fault across the fleet, pages.
QUARANTINE_SHARE = QuarantineShare(warn=0.02, error=0.05, min_rows=1_000)


class ValueFlag:
    """Why a sensor value became NULL (entries of `quality_flags` read `{sensor}:{flag}`)."""

    OUT_OF_RANGE = "out_of_range"
    NON_FINITE = "non_finite"
    UNPARSEABLE = "unparseable"
    # The file has no column for this sensor (a model without it): every value is NULL, flagged.
    MISSING_COLUMN = "missing_column"


REGISTRY_COLUMNS: tuple[str, ...] = (
    "device_id",
    "site_id",
    "model",
    "refrigerant",
    "install_date",
    "status",
)
DEVICE_STATUSES: tuple[str, ...] = ("active", "maintenance", "retired")

MAINTENANCE_COLUMNS: tuple[str, ...] = ("device_id", "event_time", "event_type", "component", "description")

# Silences known in advance: a connectivity outage, or a compressor that tripped and sends nothing
# until it is serviced. Whoever knows of one declares it (the simulator does, for what it simulates)
# in one CSV per UTC day under the landing zone (`landing/expected_gaps/<day>.csv`), a row per device
# and silence: [gap_start, gap_end) as ISO-8601 UTC timestamps. Coverage leaves a device without
# readings out while a declared gap overlaps the window judged, and names it; a device that stops
# without a declaration still counts as missing. Retired units need no row: the registry's status says so.
EXPECTED_GAP_COLUMNS: tuple[str, ...] = ("device_id", "gap_start", "gap_end", "reason")
EXPECTED_GAPS_FOLDER = "expected_gaps"


class GapReason:
    """Why a declared gap is expected (the `reason` column of an expected-gaps file)."""

    OUTAGE = "outage"
    COMPRESSOR_SILENCE = "compressor_silence"
