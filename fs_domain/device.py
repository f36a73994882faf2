"""The `Device` object type, defined once.

Its primary key, its properties and, for each pre-hydrated property, the feature and window it
comes from. The `device_objects` Delta schema, the Spark projection, the Redis encoding and the
typed values `OnlineStore.get_online_features` returns all derive from `DEVICE`.

Pre-hydrated properties come from the latest *complete* 1-day window of a device (its
`window_end` at or before the hydration time): a day still in progress would show, at 05:00, a
`reading_count_24h` of 300 as if it were a day's count.
"""

import sys
from dataclasses import dataclass

from fs_domain.features import FEATURES_BY_NAME


@dataclass(frozen=True)
class ObjectProperty:
    name: str
    dtype: str  # string | double | long | date | timestamp
    description: str
    # Where the value comes from: the registry, a feature of a window size, the anomaly scores,
    # or the hydration itself.
    source: str
    feature: str | None = None
    window_minutes: int | None = None


@dataclass(frozen=True)
class ObjectType:
    name: str
    primary_key: str
    properties: tuple[ObjectProperty, ...]

    @property
    def property_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.properties)

    def from_source(self, source: str) -> tuple[ObjectProperty, ...]:
        return tuple(p for p in self.properties if p.source == source)

    @property
    def feature_window_minutes(self) -> int:
        """The one window size the pre-hydrated features come from (one window per object)."""
        (minutes,) = {p.window_minutes for p in self.from_source("feature")}
        return minutes


DAY = 1440

DEVICE = ObjectType(
    name="Device",
    primary_key="device_id",
    properties=(
        ObjectProperty("device_id", "string", "Device id (primary key), as in the registry", "registry"),
        ObjectProperty("site_id", "string", "Site the unit is installed at", "registry"),
        ObjectProperty("model", "string", "Unit model", "registry"),
        ObjectProperty("refrigerant", "string", "Refrigerant type", "registry"),
        ObjectProperty("install_date", "date", "Installation date", "registry"),
        ObjectProperty("status", "string", "active, maintenance or retired; retired devices are not served online", "registry"),
        ObjectProperty(
            "avg_temperature_evaporator_24h",
            "double",
            "Mean evaporator temperature over the latest complete day (°C)",
            "feature",
            feature="temp_evaporator_mean",
            window_minutes=DAY,
        ),
        ObjectProperty(
            "avg_compressor_current_24h",
            "double",
            "Mean compressor current over the latest complete day (A)",
            "feature",
            feature="current_compressor_mean",
            window_minutes=DAY,
        ),
        ObjectProperty(
            "reading_count_24h",
            "long",
            "Clean readings in the latest complete day",
            "feature",
            feature="reading_count",
            window_minutes=DAY,
        ),
        ObjectProperty(
            "latest_anomaly_score",
            "double",
            "Latest daily anomaly score: how far the device's latest scored day is from its own normal (above 1 is unusual, "
            "the alert threshold is in docs/anomaly_scores.md); NULL until scores exist",
            "anomaly_scores",
        ),
        ObjectProperty(
            "anomaly_top_features",
            "string",
            "The features that contributed most to the latest anomaly score, largest first (comma-separated)",
            "anomaly_scores",
        ),
        ObjectProperty(
            "anomaly_top_pair",
            "string",
            "The two features whose joint movement contributed most to the latest anomaly score (`a×b`), or NULL",
            "anomaly_scores",
        ),
        ObjectProperty(
            "anomaly_reference",
            "string",
            "What the latest anomaly score was measured against: `device` (the device's own normal) or `fleet` "
            "(too new or too sparse for its own)",
            "anomaly_scores",
        ),
        ObjectProperty("features_window_end", "timestamp", "End (UTC) of the day window the feature properties come from", "window"),
        ObjectProperty("hydrated_at", "timestamp", "When this snapshot of the object was built (UTC)", "hydration"),
    ),
)

# The properties taken from the anomaly scores table, and the column each comes from: all
# from the device's latest scored window at or before the hydration time.
ANOMALY_SCORE_COLUMNS = {
    "latest_anomaly_score": "anomaly_score",
    "anomaly_top_features": "top_features",
    "anomaly_top_pair": "top_pair",
    "anomaly_reference": "reference",
}

# Registry statuses that are served online; a retired device's entry is removed.
SERVED_STATUSES: tuple[str, ...] = ("active", "maintenance")


def _check_definition() -> None:
    for p in DEVICE.properties:
        if p.dtype not in ("string", "double", "long", "date", "timestamp"):
            raise ValueError(f"{p.name}: unsupported property type {p.dtype}")
        if p.source == "anomaly_scores" and p.name not in ANOMALY_SCORE_COLUMNS:
            raise ValueError(f"{p.name}: no column of the anomaly scores named for it")
        if p.source == "feature":
            feature = FEATURES_BY_NAME[p.feature]  # an unknown feature fails at import
            if p.window_minutes not in feature.windows or feature.dtype != p.dtype:
                raise ValueError(f"{p.name}: {p.feature} is {feature.dtype} over {feature.windows}")


_check_definition()


def reference_markdown() -> str:
    lines = [
        f"# The `{DEVICE.name}` object",
        "",
        f"Primary key: `{DEVICE.primary_key}`. Backed by the `device_objects` Delta table and served from Redis",
        "(`OnlineStore.get_online_features`). Generated from `fs_domain/device.py`.",
        "",
        "| property | type | source | description |",
        "|---|---|---|---|",
    ]
    for p in DEVICE.properties:
        source = f"`{p.feature}`, {p.window_minutes}-minute window" if p.source == "feature" else p.source
        lines.append(f"| `{p.name}` | {p.dtype} | {source} | {p.description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference_markdown())
