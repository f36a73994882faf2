"""Names of the Delta tables under the tables root: one home for each, whoever reads or writes it."""

from fs_domain.features import DEFAULT_FEATURE_SET_VERSION, FEATURE_SET_VERSIONS
from fs_domain.models import MODEL_SPECS

# Ingest
CLEAN_TABLE = "clean_sensor_readings"
QUARANTINE_TABLE = "clean_sensor_readings_quarantine"
# One row per landing file cleaned: what it held and what became of it (the incremental ingest's ledger).
LEDGER_TABLE = "landing_file_ledger"
REGISTRY_TABLE = "device_registry"
MAINTENANCE_TABLE = "maintenance_events"

# Features and the Device object: one table per feature set version (device_features/v1, ...).
FEATURES_TABLE = "device_features"
OBJECTS_TABLE = "device_objects"

# Training and monitoring: one table per feature set version too (training_datasets/v1/<model>,
# anomaly_scores/v1, ...), each row naming its model, so a v2 line never rewrites v1's.
TRAINING_TABLE = "training_datasets"
REFERENCE_TABLE = "feature_reference_snapshots"
# Each snapshot's per-device references (the anomaly score's "own normal" of every device it could fit).
DEVICE_REFERENCES_TABLE = "device_reference_models"
# Which snapshot is each model's baseline: an append-only log of promotions (who, when, why).
PROMOTIONS_TABLE = "model_promotions"
# What a promoted snapshot's training set was built from, copied so it can be rebuilt past history
# retention: training_pins/v1/<model>/entities and .../windows, a partition per snapshot.
PINS_TABLE = "training_pins"
PIN_KINDS = ("entities", "windows")
ANOMALY_SCORES_TABLE = "anomaly_scores"
DRIFT_TABLE = "feature_drift_monitoring"

# Serving: a sample of the values `fs-serve` answered (one row per value), for training-serving skew.
SERVED_VALUES_TABLE = "served_values"


def versioned(table: str, version: str) -> str:
    """`table` of a feature set version: `anomaly_scores` -> `anomaly_scores/v1`."""
    if version not in FEATURE_SET_VERSIONS:
        raise ValueError(f"unknown feature set version {version!r}; the registry knows {list(FEATURE_SET_VERSIONS)}")
    return f"{table}/{version}"


def features_table(version: str = DEFAULT_FEATURE_SET_VERSION) -> str:
    """The features table of a feature set version: device_features/v1, device_features/v2, ..."""
    return versioned(FEATURES_TABLE, version)


def objects_table(version: str = DEFAULT_FEATURE_SET_VERSION) -> str:
    """The `device_objects` table built from a version's features: device_objects/v1, ..."""
    return versioned(OBJECTS_TABLE, version)


def training_table(model: str, version: str) -> str:
    """A model's training set on a feature set version: training_datasets/v1/device_health_1d, ..."""
    return f"{versioned(TRAINING_TABLE, version)}/{model}"


def pin_table(model: str, version: str, kind: str) -> str:
    """A model's pinned training inputs of one kind (`entities` or `windows`): training_pins/v1/device_health_1d/windows."""
    if kind not in PIN_KINDS:
        raise ValueError(f"unknown pin kind {kind!r}; one of {list(PIN_KINDS)}")
    return f"{versioned(PINS_TABLE, version)}/{model}/{kind}"


def dated_tables() -> dict[str, str]:
    """Every Delta table whose partitions are days, with the column holding the day: what retention
    drops past its age. The ledger goes with the clean readings it accounts for."""
    return {
        CLEAN_TABLE: "reading_date",
        QUARANTINE_TABLE: "landing_date",
        LEDGER_TABLE: "landing_date",
        **{features_table(v): "window_date" for v in FEATURE_SET_VERSIONS},
        **{versioned(ANOMALY_SCORES_TABLE, v): "window_date" for v in FEATURE_SET_VERSIONS},
        **{versioned(DRIFT_TABLE, v): "report_date" for v in FEATURE_SET_VERSIONS},
        SERVED_VALUES_TABLE: "served_date",
    }


def archived_tables() -> dict[str, str]:
    """The dated tables whose expired days retention moves to the archive rather than deletes (the
    history training sets are built from), with the column holding the day."""
    return {CLEAN_TABLE: "reading_date", **{features_table(v): "window_date" for v in FEATURE_SET_VERSIONS}}


def every_table() -> list[str]:
    """The catalog: every Delta table the store writes, dated or not. Maintenance compacts and
    vacuums each of these, so a table added here is never forgotten there."""
    return [
        *dated_tables(),
        REGISTRY_TABLE,
        MAINTENANCE_TABLE,
        *(versioned(t, v) for t in (REFERENCE_TABLE, DEVICE_REFERENCES_TABLE, PROMOTIONS_TABLE) for v in FEATURE_SET_VERSIONS),
        *(objects_table(v) for v in FEATURE_SET_VERSIONS),
        *(training_table(m.name, m.feature_set_version) for m in MODEL_SPECS),
        *(pin_table(m.name, m.feature_set_version, kind) for m in MODEL_SPECS for kind in PIN_KINDS),
    ]
