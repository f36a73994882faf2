"""Models a training set and a reference snapshot are built for, one spec each.

A model names its features, the window size they come from, how far ahead its label looks and
how often a device is sampled. `training_dataset` and `feature_reference_snapshot` are partitioned
by model name, so each model has its own training set and its own versioned reference.
"""

from dataclasses import dataclass
from datetime import timedelta

from fs_domain.features import FEATURES_BY_NAME, features_for


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    features: tuple[str, ...]
    window_minutes: int
    # Label: a failure (of `label_events`) within (event_time, event_time + label_horizon].
    label_horizon: timedelta
    sample_every: timedelta
    label_events: tuple[str, ...] = ("failure", "fault_start")
    tolerance: timedelta = timedelta(hours=1)


DEVICE_HEALTH_1D = ModelSpec(
    name="device_health_1d",
    description="Compressor failure within 7 days, from a device's latest complete day; its reference scores anomalies and measures drift.",
    # Every v1 feature of the day window: its reference is also what drift reports compare against.
    features=tuple(f.name for f in features_for("v1") if 1440 in f.windows),
    window_minutes=1440,
    label_horizon=timedelta(days=7),
    sample_every=timedelta(days=1),
    tolerance=timedelta(hours=1),
)

COMPRESSOR_FAILURE_1H = ModelSpec(
    name="compressor_failure_1h",
    description="Compressor failure within the next 24 hours, sampled hourly from 1-hour windows.",
    features=(
        "current_compressor_mean",
        "current_compressor_std",
        "current_compressor_slope",
        "vibration_compressor_mean",
        "vibration_compressor_max",
        "temp_discharge_mean",
        "temp_discharge_slope",
        "pressure_ratio",
        "compressor_duty_cycle",
    ),
    window_minutes=60,
    label_horizon=timedelta(hours=24),
    sample_every=timedelta(hours=1),
)

MODELS: dict[str, ModelSpec] = {m.name: m for m in (DEVICE_HEALTH_1D, COMPRESSOR_FAILURE_1H)}


def _check_models() -> None:
    for model in MODELS.values():
        for name in model.features:
            if model.window_minutes not in FEATURES_BY_NAME[name].windows:
                raise ValueError(f"{model.name}: {name} has no {model.window_minutes}-minute window")


_check_models()
