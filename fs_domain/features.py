"""The feature registry: every feature of `device_features` and every window size, defined once.

The Delta schema, the assets' column metadata in the UI, the null thresholds, the kernels and the
generated reference page (`docs/features.md`, `python -m fs_domain.features`) all derive from here.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from fs_domain.contract import SENSORS


@dataclass(frozen=True)
class Window:
    """A tumbling window size, aligned to midnight UTC; its features are one asset."""

    minutes: int
    suffix: str

    @property
    def asset_name(self) -> str:
        return f"device_features_{self.suffix}"


WINDOWS: tuple[Window, ...] = (Window(15, "15m"), Window(60, "1h"), Window(1440, "1d"))
WINDOWS_BY_MINUTES: dict[int, Window] = {w.minutes: w for w in WINDOWS}
WINDOW_MINUTES: tuple[int, ...] = tuple(w.minutes for w in WINDOWS)
FEATURE_SET_VERSIONS: tuple[str, ...] = ("v1", "v2")
DEFAULT_FEATURE_SET_VERSION = "v1"

# Above this motor current the compressor counts as running (standby draw is well below 1 A).
COMPRESSOR_ON_AMPS = 1.0

# Minimum readings, per window size (a feature is NULL below its window's figure). The design fixes
# two: a 24-hour aggregate needs 100 readings (about 7 % of a day's 1,440) and 1-hour spectral
# entropy 60 (every minute: an FFT needs evenly spaced samples). The other windows keep the day's
# share of their expected one-a-minute readings, rounded: 15 minutes -> 1, 1 hour -> 4; and never
# fewer than the statistic needs (2 for a standard deviation or a slope).
DAY_AGGREGATE_MIN_READINGS = 100
HOUR_SPECTRAL_MIN_READINGS = 60


def share_of_day_minimum(minutes: int) -> int:
    """The readings a window of `minutes` needs for an aggregate: the day's 100 in 1,440, scaled."""
    return max(1, round(minutes * DAY_AGGREGATE_MIN_READINGS / 1440))


def aggregate_minimum(least: int = 1) -> dict[int, int]:
    """Per window size: the day's share of readings, at least `least` (what the statistic needs)."""
    return {m: max(least, share_of_day_minimum(m)) for m in WINDOW_MINUTES}


ALWAYS_DEFINED: dict[int, int] = {m: 0 for m in WINDOW_MINUTES}


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    unit: str
    sources: tuple[str, ...]
    # Per window size: NULL when the window holds fewer non-NULL values of each source sensor (or,
    # without sources, fewer readings) than this. 0: defined for every window with a reading.
    min_readings: dict[int, int] = field(hash=False)
    windows: tuple[int, ...] = WINDOW_MINUTES
    added_in: str = "v1"
    dtype: str = "double"
    family: str = "time_domain"
    statistic: str = ""

    def threshold(self, minutes: int) -> int:
        """Minimum readings in a window of `minutes` for this feature not to be NULL."""
        if minutes not in self.windows:
            raise ValueError(f"{self.name} has no {minutes}-minute window; its windows: {list(self.windows)}")
        return self.min_readings[minutes]


PER_SENSOR_STATISTICS: dict[str, tuple[str, int, str]] = {
    # statistic: (description, least readings the statistic needs, unit rule)
    "mean": ("Arithmetic mean", 1, "sensor"),
    "std": ("Sample standard deviation (n - 1)", 2, "sensor"),
    "min": ("Minimum", 1, "sensor"),
    "max": ("Maximum", 1, "sensor"),
    "p95": ("95th percentile, linear interpolation between closest ranks (numpy's default)", 1, "sensor"),
    "slope": ("Least-squares slope against minutes since window_start", 2, "sensor/min"),
}


def _per_sensor_features() -> list[Feature]:
    features = []
    for sensor in SENSORS:
        for statistic, (text, least, unit_rule) in PER_SENSOR_STATISTICS.items():
            unit = sensor.unit if unit_rule == "sensor" else f"{sensor.unit}/min"
            features.append(
                Feature(
                    name=f"{sensor.name}_{statistic}",
                    description=f"{text} of {sensor.description.lower()} in the window",
                    unit=unit,
                    sources=(sensor.name,),
                    min_readings=aggregate_minimum(least),
                    statistic=statistic,
                )
            )
    return features


FEATURES: tuple[Feature, ...] = (
    *_per_sensor_features(),
    Feature(
        "reading_count",
        "Readings in the window (rows, whatever their NULLs)",
        "readings",
        (),
        ALWAYS_DEFINED,
        dtype="long",
        family="cross_sensor",
    ),
    # Defined for every window with a reading: 0 when every sensor value is NULL.
    Feature(
        "sensor_completeness",
        "Share of non-NULL sensor values among the window's readings x 7 sensors",
        "ratio",
        tuple(s.name for s in SENSORS),
        ALWAYS_DEFINED,
        family="cross_sensor",
    ),
    Feature(
        "pressure_ratio",
        "pressure_high_mean / pressure_low_mean (compression ratio proxy)",
        "ratio",
        ("pressure_high", "pressure_low"),
        aggregate_minimum(),
        family="cross_sensor",
    ),
    Feature(
        "compressor_duty_cycle",
        f"Share of readings with compressor current above {COMPRESSOR_ON_AMPS} A",
        "ratio",
        ("current_compressor",),
        aggregate_minimum(),
        family="cross_sensor",
    ),
    Feature(
        "spectral_entropy_vibration",
        "Normalised Shannon entropy of the FFT power spectrum of compressor vibration (mean removed, readings in time order); 0 = one tone, 1 = white noise",
        "ratio",
        ("vibration_compressor",),
        {60: HOUR_SPECTRAL_MIN_READINGS, 1440: DAY_AGGREGATE_MIN_READINGS},
        windows=(60, 1440),
        family="frequency",
    ),
    Feature(
        "vibration_compressor_rms",
        "Root mean square of compressor vibration in the window (energy, not level)",
        "mm/s RMS",
        ("vibration_compressor",),
        aggregate_minimum(),
        added_in="v2",
        family="cross_sensor",
    ),
)
FEATURES_BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}


def _check_thresholds() -> None:
    for f in FEATURES:
        if set(f.min_readings) != set(f.windows):
            raise ValueError(f"{f.name}: thresholds for {sorted(f.min_readings)}, windows {list(f.windows)}")


_check_thresholds()

KEY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("device_id", "string", "Device id"),
    ("window_start", "timestamp", "Window start, UTC, inclusive"),
    ("window_end", "timestamp", "Window end, UTC, exclusive"),
    ("window_duration_minutes", "int", "Window size: 15, 60 or 1440 (partition column)"),
    ("window_date", "date", "UTC date of window_start (partition column)"),
)
TRAILER_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("computed_at", "timestamp", "When this row was computed (processing time)"),
    ("feature_set_version", "string", "Feature set version the row belongs to"),
)
PARTITION_COLUMNS: tuple[str, ...] = ("window_date", "window_duration_minutes")


def features_for(version: str = DEFAULT_FEATURE_SET_VERSION) -> tuple[Feature, ...]:
    """The features of a feature set version: every feature added in it or before."""
    if version not in FEATURE_SET_VERSIONS:
        raise ValueError(f"unknown feature set version {version!r}; known: {list(FEATURE_SET_VERSIONS)}")
    rank = FEATURE_SET_VERSIONS.index(version)
    return tuple(f for f in FEATURES if FEATURE_SET_VERSIONS.index(f.added_in) <= rank)


def table_columns(version: str = DEFAULT_FEATURE_SET_VERSION) -> list[tuple[str, str, str]]:
    """(name, type, description) of every column of the version's table, in order."""
    return [*KEY_COLUMNS, *[(f.name, f.dtype, f.description) for f in features_for(version)], *TRAILER_COLUMNS]


def _thresholds_text(f: Feature) -> str:
    return ", ".join(f"{m}: {f.min_readings[m]}" for m in f.windows)


def reference_markdown(version: str = DEFAULT_FEATURE_SET_VERSION) -> str:
    lines = [
        f"# Feature reference ({version})",
        "",
        "Generated from `fs_domain/features.py` by `python -m fs_domain.features`; do not edit by hand.",
        "",
        "Minimum readings (NULL below), per window size: "
        f"{DAY_AGGREGATE_MIN_READINGS} for a 24-hour aggregate and {HOUR_SPECTRAL_MIN_READINGS} for 1-hour spectral entropy "
        "(the design's figures); shorter windows keep the day's share of their one-a-minute readings, rounded, and never "
        "fewer than the statistic needs (2 for std and slope).",
        "",
        "| feature | unit | windows (min) | sources | NULL below (per window) | added | description |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in features_for(version):
        lines.append(
            f"| `{f.name}` | {f.unit} | {', '.join(map(str, f.windows))} | {', '.join(f.sources) or '—'} | {_thresholds_text(f)} | {f.added_in} | {f.description} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference_markdown(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_FEATURE_SET_VERSION))
