"""The feature registry: every feature of `device_features` and every window size, defined once.

The Delta schema, the assets' column metadata in the UI, the null thresholds, the kernels and the
generated reference page (`docs/features.md`, `python -m fs_domain.features`) all derive from here.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    unit: str
    sources: tuple[str, ...]
    # NULL when the window holds fewer non-NULL values of the source sensor(s) than this.
    min_readings: int
    windows: tuple[int, ...] = WINDOW_MINUTES
    added_in: str = "v1"
    dtype: str = "double"
    family: str = "time_domain"
    statistic: str = ""


PER_SENSOR_STATISTICS: dict[str, tuple[str, int, str]] = {
    # statistic: (description, minimum readings, unit rule)
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
        for statistic, (text, min_readings, unit_rule) in PER_SENSOR_STATISTICS.items():
            unit = sensor.unit if unit_rule == "sensor" else f"{sensor.unit}/min"
            features.append(
                Feature(
                    name=f"{sensor.name}_{statistic}",
                    description=f"{text} of {sensor.description.lower()} in the window",
                    unit=unit,
                    sources=(sensor.name,),
                    min_readings=min_readings,
                    statistic=statistic,
                )
            )
    return features


FEATURES: tuple[Feature, ...] = (
    *_per_sensor_features(),
    Feature("reading_count", "Readings in the window (rows, whatever their NULLs)", "readings", (), 0, dtype="long", family="cross_sensor"),
    # Defined for every window with a reading: 0 when every sensor value is NULL.
    Feature(
        "sensor_completeness",
        "Share of non-NULL sensor values among the window's readings x 7 sensors",
        "ratio",
        tuple(s.name for s in SENSORS),
        0,
        family="cross_sensor",
    ),
    Feature(
        "pressure_ratio",
        "pressure_high_mean / pressure_low_mean (compression ratio proxy)",
        "ratio",
        ("pressure_high", "pressure_low"),
        1,
        family="cross_sensor",
    ),
    Feature(
        "compressor_duty_cycle",
        f"Share of readings with compressor current above {COMPRESSOR_ON_AMPS} A",
        "ratio",
        ("current_compressor",),
        1,
        family="cross_sensor",
    ),
    Feature(
        "spectral_entropy_vibration",
        "Normalised Shannon entropy of the FFT power spectrum of compressor vibration (mean removed, readings in time order); 0 = one tone, 1 = white noise",
        "ratio",
        ("vibration_compressor",),
        16,
        windows=(60, 1440),
        family="frequency",
    ),
    Feature(
        "vibration_compressor_rms",
        "Root mean square of compressor vibration in the window (energy, not level)",
        "mm/s RMS",
        ("vibration_compressor",),
        1,
        added_in="v2",
        family="cross_sensor",
    ),
)
FEATURES_BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}

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


def reference_markdown(version: str = DEFAULT_FEATURE_SET_VERSION) -> str:
    lines = [
        f"# Feature reference ({version})",
        "",
        "Generated from `fs_domain/features.py` by `python -m fs_domain.features`; do not edit by hand.",
        "",
        "| feature | unit | windows (min) | sources | NULL below | added | description |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in features_for(version):
        lines.append(
            f"| `{f.name}` | {f.unit} | {', '.join(map(str, f.windows))} | {', '.join(f.sources) or '—'} | {f.min_readings} | {f.added_in} | {f.description} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference_markdown(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_FEATURE_SET_VERSION))
