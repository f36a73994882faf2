"""Models a training set and a reference snapshot are built for: one spec per model and feature set
version, and the version each model is served on (its pin).

A model names its features, the window size they come from, how far ahead its label looks and
how often a device is sampled. Each spec belongs to one feature set version: `device_health_1d`
on v1 reads v1's features, and its v2 spec (the same model retrained with what v2 adds) reads
v2's. Everything a model writes (training set, reference snapshots, promotions, scores, drift
reports) lives under its version's tables, so validating v2 never touches what v1 serves.
"""

from dataclasses import dataclass
from datetime import timedelta

from fs_domain.features import FEATURE_SET_VERSIONS, FEATURES_BY_NAME, features_for


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    feature_set_version: str
    features: tuple[str, ...]
    window_minutes: int
    # Label: a failure (of `label_events`) within (event_time, event_time + label_horizon].
    label_horizon: timedelta
    sample_every: timedelta
    # The anomaly score's inputs: physical summaries that move when a compressor degrades or a
    # sensor drifts (not counts or completeness, which measure the transport, not the machine).
    scored_features: tuple[str, ...]
    label_events: tuple[str, ...] = ("failure", "fault_start")
    tolerance: timedelta = timedelta(hours=1)
    # Pre-hydration writes its latest input vector beside the `Device` object.
    served_online: bool = True
    # Its score is the `Device` object's `latest_anomaly_score`.
    scores_device_object: bool = False

    @property
    def key(self) -> str:
        return f"{self.name}@{self.feature_set_version}"


# Scores whose inputs are this sparse are flagged reduced-confidence: fewer readings than this
# share of the window's one-a-minute readings, or sensor completeness below this.
SPARSE_READING_SHARE = 0.5
SPARSE_COMPLETENESS = 0.8
# The reduced-confidence check warns when more than this share of a day's scores of a model is flagged.
REDUCED_CONFIDENCE_MAX_SHARE = 0.10
# A site event (a whole site's sensor drifting, a gateway's calibration, a site-wide fault): in a
# model's newest scored window, at least this many of a site's active devices, and at least this
# share of those scored, beyond the anomaly threshold. It pages the ML route; one device alone is
# a maintenance matter, never a page. A window older than this many hours when judged (a backfill
# of past days) is reported, not judged.
SITE_EVENT_MIN_DEVICES = 3
SITE_EVENT_MIN_SHARE = 0.5
SITE_EVENT_MAX_AGE_HOURS = 6
# Site events are judged on windows of at most this size: a 1-day reference measures a day's mean
# against the device's other days, and a site's weather moves all its units' days together (on the
# simulated fleet with 2 °C of site weather, 0.9 % of site-days would page on 1-day windows and none
# on 1-hour ones: bench/results/degradation.json).
SITE_EVENT_MAX_WINDOW_MINUTES = 60
# A device gets its own anomaly reference from this many healthy windows on (fewer: the fleet's).
# Its calibration scores each window by a reference fitted on the others, which needs at least five.
MIN_DEVICE_WINDOWS = 6
# An anomaly score above this flags the window. Chosen on healthy windows only: the 99th percentile
# of SKAB devices' healthy reference windows, each scored by its device's reference fitted without
# it (bench/skab_anomaly_auc.py; results in bench/results/skab_auc.json, "healthy_out_of_fold").
ANOMALY_THRESHOLD = 3.5

_DAY_SCORED = (
    "temp_evaporator_mean",
    "temp_condenser_mean",
    "temp_discharge_mean",
    "pressure_high_mean",
    "pressure_low_mean",
    "current_compressor_mean",
    "current_compressor_p95",
    "vibration_compressor_mean",
    "vibration_compressor_p95",
    "compressor_duty_cycle",
)
# Every sensor's level, and how the compressor moves: a failing compressor and a drifting sensor
# (a calibration error, a whole site's) both show within the hour.
_HOUR_FEATURES = (
    "temp_evaporator_mean",
    "temp_condenser_mean",
    "pressure_high_mean",
    "pressure_low_mean",
    "current_compressor_mean",
    "current_compressor_std",
    "current_compressor_slope",
    "vibration_compressor_mean",
    "vibration_compressor_max",
    "temp_discharge_mean",
    "temp_discharge_slope",
    "pressure_ratio",
    "compressor_duty_cycle",
)


def _added_since_v1(version: str, window_minutes: int) -> tuple[str, ...]:
    """The features a version adds over v1 that have a window of this size: a model's retrained
    spec reads them too."""
    return tuple(f.name for f in features_for(version) if f.added_in != FEATURE_SET_VERSIONS[0] and window_minutes in f.windows)


def _specs_for(version: str) -> tuple[ModelSpec, ...]:
    day_features = tuple(f.name for f in features_for(version) if 1440 in f.windows)
    hour_features = _HOUR_FEATURES + _added_since_v1(version, 60)
    return (
        ModelSpec(
            name="device_health_1d",
            description="Compressor failure within 7 days, from a device's latest complete day; its reference scores anomalies and measures drift.",
            feature_set_version=version,
            # Every 1-day feature of the version: its reference is also what drift reports compare against.
            features=day_features,
            window_minutes=1440,
            label_horizon=timedelta(days=7),
            sample_every=timedelta(days=1),
            scored_features=_DAY_SCORED + _added_since_v1(version, 1440),
            scores_device_object=True,
        ),
        ModelSpec(
            name="compressor_failure_1h",
            description="Compressor failure within the next 24 hours, sampled hourly from 1-hour windows.",
            feature_set_version=version,
            features=hour_features,
            window_minutes=60,
            label_horizon=timedelta(hours=24),
            sample_every=timedelta(hours=1),
            scored_features=hour_features,
        ),
    )


MODEL_SPECS: tuple[ModelSpec, ...] = tuple(spec for version in FEATURE_SET_VERSIONS for spec in _specs_for(version))
MODEL_NAMES: tuple[str, ...] = tuple(dict.fromkeys(m.name for m in MODEL_SPECS))


class UnknownModel(ValueError):
    pass


def models_for(version: str) -> dict[str, ModelSpec]:
    """The model specs of a feature set version, by model name."""
    if version not in FEATURE_SET_VERSIONS:
        raise ValueError(f"unknown feature set version {version!r}; known: {list(FEATURE_SET_VERSIONS)}")
    return {m.name: m for m in MODEL_SPECS if m.feature_set_version == version}


def model_spec(name: str, version: str) -> ModelSpec:
    """The spec of model `name` on feature set `version`."""
    specs = models_for(version)
    if name not in specs:
        raise UnknownModel(f"no model {name!r} on feature set {version}; its models: {sorted(specs)}")
    return specs[name]


def device_score_model(version: str) -> ModelSpec:
    """The model whose score the `Device` object of `version` shows as `latest_anomaly_score`."""
    (model,) = [m for m in models_for(version).values() if m.scores_device_object]
    return model


# Which feature set version each model is served on: its scores, drift reports, online vectors and,
# by default, its training runs. A model moves alone (`device_health_1d` to v2 while
# `compressor_failure_1h` keeps reading v1); the deployment's own version (`FS_FEATURE_SET_VERSION`)
# only selects the `Device` object's. Operators override entries without a release through the
# setting named in `MODEL_PINS_SETTING`, e.g. `device_health_1d=v2,compressor_failure_1h=v1`.
MODEL_PINS: dict[str, str] = {
    "device_health_1d": "v1",
    "compressor_failure_1h": "v1",
}
MODEL_PINS_SETTING = "FS_MODEL_VERSIONS"


class InvalidModelPins(ValueError):
    pass


def model_pins(overrides: str | None = None, setting: str = MODEL_PINS_SETTING) -> dict[str, str]:
    """`MODEL_PINS` with `overrides` (`model=version,...`) applied; a malformed entry, an unknown
    model or a version without a spec of that model is an error naming `setting`."""
    pins = dict(MODEL_PINS)
    for entry in (overrides or "").split(","):
        if not entry.strip():
            continue
        name, sep, version = (part.strip() for part in entry.partition("="))
        if not sep or not name or not version:
            raise InvalidModelPins(f"{setting}: {entry.strip()!r} is not model=version (e.g. device_health_1d=v2)")
        if name not in MODEL_NAMES:
            raise InvalidModelPins(f"{setting}: unknown model {name!r}; models: {list(MODEL_NAMES)}")
        if version not in FEATURE_SET_VERSIONS:
            raise InvalidModelPins(f"{setting}: unknown feature set version {version!r} for {name}; known: {list(FEATURE_SET_VERSIONS)}")
        if name not in models_for(version):
            raise InvalidModelPins(f"{setting}: {name} has no spec on {version}")
        pins[name] = version
    return pins


def pinned_models(pins: dict[str, str]) -> dict[str, ModelSpec]:
    """Each model's spec on the version it is pinned to, by name."""
    return {name: model_spec(name, version) for name, version in pins.items()}


def served_versions(pins: dict[str, str], deployment_version: str) -> tuple[str, ...]:
    """The feature set versions a deployment computes: its own (the `Device` object's) and every
    version a model is pinned to, in registry order."""
    used = {deployment_version, *pins.values()}
    return tuple(v for v in FEATURE_SET_VERSIONS if v in used)


def models_pinned_to(version: str, pins: dict[str, str]) -> dict[str, ModelSpec]:
    """The models served on `version`, by name (none: the version only carries the `Device` object)."""
    return {name: spec for name, spec in pinned_models(pins).items() if spec.feature_set_version == version}


def device_score_model_of(pins: dict[str, str]) -> ModelSpec:
    """The model whose score is the `Device` object's `latest_anomaly_score`, on its pinned version."""
    (model,) = [m for m in pinned_models(pins).values() if m.scores_device_object]
    return model


# A model's online input vector: its features in the model's order, typed as in the features
# table, then the window they come from and when the vector was projected.
VECTOR_TRAILER: tuple[tuple[str, str], ...] = (("window_start", "timestamp"), ("window_end", "timestamp"), ("hydrated_at", "timestamp"))
# Pre-hydration serves a model's latest window that started at most this many days before the
# hydration day: a device silent for longer has no current input vector (None online).
VECTOR_LOOKBACK_DAYS = 2


def vector_columns(model: ModelSpec) -> tuple[tuple[str, str], ...]:
    """(name, type) of every field of the model's online vector, in order."""
    return (*((name, FEATURES_BY_NAME[name].dtype) for name in model.features), *VECTOR_TRAILER)


# The v1 specs, by name, for code that means the deployed line.
DEVICE_HEALTH_1D = model_spec("device_health_1d", "v1")
COMPRESSOR_FAILURE_1H = model_spec("compressor_failure_1h", "v1")


def _check_models() -> None:
    for model in MODEL_SPECS:
        known = {f.name for f in features_for(model.feature_set_version)}
        for name in (*model.features, *model.scored_features):
            if name not in known:
                raise ValueError(f"{model.key}: {name} is not a feature of {model.feature_set_version}")
            if model.window_minutes not in FEATURES_BY_NAME[name].windows:
                raise ValueError(f"{model.key}: {name} has no {model.window_minutes}-minute window")
        if not set(model.scored_features) <= set(model.features):
            raise ValueError(f"{model.key}: scores features it does not read")
    for version in FEATURE_SET_VERSIONS:
        device_score_model(version)
    if set(MODEL_PINS) != set(MODEL_NAMES):
        raise ValueError(f"MODEL_PINS must pin every model exactly once: {sorted(MODEL_PINS)} vs {sorted(MODEL_NAMES)}")
    model_pins(",".join(f"{name}={version}" for name, version in MODEL_PINS.items()), setting="MODEL_PINS")


_check_models()
