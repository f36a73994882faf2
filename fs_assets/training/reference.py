"""Reference snapshots and their promotion.

A snapshot is written as a JSON model artifact and a row of `feature_reference_snapshots/<version>`.
Writing one changes nothing downstream: a snapshot becomes the model's baseline (what drift reports
compare against and what anomaly scores are measured from) only when it is promoted, a row appended
to `model_promotions/<version>` saying which snapshot, who, when and why. The latest promotion of a
model wins, so rolling back is promoting an older snapshot again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fs_assets.training.anomaly import ReferenceModel, fit_reference
from fs_domain.models import ModelSpec
from fs_domain.tables import DEVICE_REFERENCES_TABLE, PROMOTIONS_TABLE, REFERENCE_TABLE, versioned
from fs_resources import settings
from fs_resources.delta import DeltaTables, DeltaWrite


@dataclass(frozen=True)
class ReferenceSnapshot:
    model: str
    feature_set_version: str
    version: int
    created_at: str
    window_minutes: int
    features: list[str]
    training_start: str | None
    training_end: str | None
    rows: int
    devices: int
    statistics: dict[str, dict]
    # The Delta versions the snapshot was computed from: {table: version}.
    read_versions: dict[str, int]
    # The anomaly score's fleet reference (`ReferenceModel.to_dict()`): what a device without its
    # own is measured against. None in snapshots written before scores were multivariate.
    fleet_reference: dict | None = None
    # How many devices got their own reference (rows of `device_reference_models` for this snapshot).
    device_references: int = 0
    # How many training rows the statistics and the fleet reference were computed from (all of them up
    # to SNAPSHOT_SAMPLE_ROWS, a uniform sample above); None in snapshots written before sampling.
    statistics_rows: int | None = None

    @classmethod
    def from_json(cls, text: str) -> ReferenceSnapshot:
        return cls(**json.loads(text))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False)


@dataclass(frozen=True)
class Promotion:
    model: str
    feature_set_version: str
    snapshot_version: int
    promoted_by: str
    promoted_at: datetime
    reason: str
    previous_snapshot_version: int | None
    run_id: str


PROMOTIONS_SCHEMA = (
    "model string, feature_set_version string, snapshot_version int, promoted_by string, promoted_at timestamp, "
    "reason string, previous_snapshot_version int, run_id string"
)
SNAPSHOTS_SCHEMA = (
    "model string, feature_set_version string, snapshot_version int, created_at string, window_minutes int, "
    "features array<string>, training_start string, training_end string, rows long, devices long, artifact string, snapshot_json string"
)
# A device's reference as a row of `device_reference_models` (beside `model` and `snapshot_version`):
# arrays rather than JSON, so a day's run turns 100,000 rows into references in a second or two.
DEVICE_REFERENCE_COLUMNS = (
    "device_id string, windows long, features array<string>, centre array<double>, scale array<double>, "
    "precision array<double>, calibration double, shrinkage double"
)
_REFERENCE_FIELDS = [c.split()[0] for c in DEVICE_REFERENCE_COLUMNS.split(", ")]


def artifact_path(model: str, feature_set_version: str, version: int, root: str | None = None) -> Path:
    base = Path(settings.data_root() if root is None else root)
    return base / "models" / feature_set_version / model / "reference" / f"v{version}.json"


def next_snapshot_version(delta: DeltaTables, model: ModelSpec) -> int:
    table = versioned(REFERENCE_TABLE, model.feature_set_version)
    if not delta.exists(table):
        return 1
    latest = delta.read(table).where(F.col("model") == model.name).agg(F.max("snapshot_version")).first()[0]
    return (latest or 0) + 1


def write_snapshot(delta: DeltaTables, snapshot: ReferenceSnapshot, run_id: str | None = None) -> tuple[Path, DeltaWrite]:
    """The JSON artifact first (atomically), then its Delta row. Neither makes it a baseline."""
    path = artifact_path(snapshot.model, snapshot.feature_set_version, snapshot.version)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(snapshot.to_json())
    tmp.replace(path)
    row = [
        (
            snapshot.model,
            snapshot.feature_set_version,
            snapshot.version,
            snapshot.created_at,
            snapshot.window_minutes,
            snapshot.features,
            snapshot.training_start,
            snapshot.training_end,
            snapshot.rows,
            snapshot.devices,
            str(path),
            snapshot.to_json(),
        )
    ]
    return path, delta.replace_partitions(
        delta.session.createDataFrame(row, SNAPSHOTS_SCHEMA),
        versioned(REFERENCE_TABLE, snapshot.feature_set_version),
        {"model": [snapshot.model], "snapshot_version": [snapshot.version]},
        run_id=run_id,
    )


def read_snapshot(delta: DeltaTables, model: ModelSpec, snapshot_version: int | None = None) -> ReferenceSnapshot | None:
    """A snapshot of the model (the latest written when `snapshot_version` is None), or None."""
    table = versioned(REFERENCE_TABLE, model.feature_set_version)
    if not delta.exists(table):
        return None
    rows = delta.read(table).where(F.col("model") == model.name)
    if snapshot_version is not None:
        rows = rows.where(F.col("snapshot_version") == snapshot_version)
    found = rows.orderBy(F.col("snapshot_version").desc()).limit(1).select("snapshot_json").collect()
    return ReferenceSnapshot.from_json(found[0]["snapshot_json"]) if found else None


def promotions(delta: DeltaTables, model: ModelSpec) -> list[Promotion]:
    """Every promotion of the model on its feature set version, oldest first."""
    table = versioned(PROMOTIONS_TABLE, model.feature_set_version)
    if not delta.exists(table):
        return []
    rows = delta.read(table).where(F.col("model") == model.name).orderBy("promoted_at").collect()
    # Spark hands timestamps back naive, in its UTC session time zone.
    return [Promotion(**(r.asDict() | {"promoted_at": r["promoted_at"].replace(tzinfo=UTC)})) for r in rows]


def promoted(delta: DeltaTables, model: ModelSpec) -> tuple[Promotion, ReferenceSnapshot] | None:
    """The model's baseline: its latest promotion and the snapshot it names, or None before any."""
    history = promotions(delta, model)
    if not history:
        return None
    latest = history[-1]
    snapshot = read_snapshot(delta, model, latest.snapshot_version)
    if snapshot is None:
        raise RuntimeError(
            f"{model.key}: promotion of snapshot v{latest.snapshot_version} names a snapshot that is not in "
            f"{versioned(REFERENCE_TABLE, model.feature_set_version)}"
        )
    return latest, snapshot


def record_promotion(delta: DeltaTables, promotion: Promotion) -> DeltaWrite:
    """Append the promotion; a re-execution of the same run finds its row and writes nothing twice."""
    table = versioned(PROMOTIONS_TABLE, promotion.feature_set_version)
    batch = f"promote-{promotion.model}-{promotion.run_id}"
    done = delta.batch_commit(table, batch)
    if done is not None:
        return done
    frame = delta.session.createDataFrame([tuple(asdict(promotion).values())], PROMOTIONS_SCHEMA)
    return delta.append(frame, table, ["model"], run_id=promotion.run_id, batch=batch)


def fitted_device_references(training: DataFrame, model: ModelSpec) -> DataFrame:
    """Each device's own reference, fitted on its healthy windows of a training set (rows labelled 0,
    with features), as `DEVICE_REFERENCE_COLUMNS`. A device with too few such windows gets no row, and
    is scored against the fleet's reference. Fitted per device on the executors."""
    features = tuple(model.scored_features)

    def fit(rows):
        import pandas as pd

        reference = fit_reference(rows, features)
        if reference is None:
            return pd.DataFrame({name: pd.Series([], dtype=object) for name in _REFERENCE_FIELDS}).astype(
                {"windows": "int64", "calibration": "float64", "shrinkage": "float64"}
            )
        return pd.DataFrame(
            {
                "device_id": [rows["device_id"].iat[0]],
                "windows": [reference.windows],
                "features": [list(reference.features)],
                "centre": [reference.centre.tolist()],
                "scale": [reference.scale.tolist()],
                "precision": [reference.precision.ravel().tolist()],
                "calibration": [float(reference.calibration)],
                "shrinkage": [float(reference.shrinkage)],
            }
        )

    healthy = training.where((F.col("label") == 0) & F.col("feature_window_end").isNotNull())
    return healthy.select("device_id", *features).groupBy("device_id").applyInPandas(fit, DEVICE_REFERENCE_COLUMNS)


def write_device_references(
    delta: DeltaTables, model: ModelSpec, snapshot_version: int, references: DataFrame, run_id: str | None = None
) -> tuple[DeltaWrite, int]:
    """A snapshot's per-device references, as one partition (model, snapshot version) of their table;
    with how many devices it holds."""
    table = versioned(DEVICE_REFERENCES_TABLE, model.feature_set_version)
    frame = references.select(
        F.lit(model.name).alias("model"), F.lit(snapshot_version).cast("int").alias("snapshot_version"), *_REFERENCE_FIELDS
    )
    write = delta.replace_partitions(frame, table, {"model": [model.name], "snapshot_version": [snapshot_version]}, run_id=run_id)
    held = delta.read(table).where((F.col("model") == model.name) & (F.col("snapshot_version") == snapshot_version)).count()
    return write, held


def references_from_arrow(rows) -> dict[str, ReferenceModel]:
    """`DEVICE_REFERENCE_COLUMNS` rows (an Arrow table) as references, by device."""
    arrays = {name: rows.column(name).to_numpy(zero_copy_only=False) for name in ("centre", "scale", "precision")}
    features = rows.column("features").to_pylist()
    windows, calibration, shrinkage = (rows.column(c).to_numpy(zero_copy_only=False) for c in ("windows", "calibration", "shrinkage"))
    out = {}
    for i, device in enumerate(rows.column("device_id").to_pylist()):
        k = len(features[i])
        out[device] = ReferenceModel(
            features=tuple(features[i]),
            centre=np.asarray(arrays["centre"][i], dtype="float64"),
            scale=np.asarray(arrays["scale"][i], dtype="float64"),
            precision=np.asarray(arrays["precision"][i], dtype="float64").reshape(k, k),
            windows=int(windows[i]),
            calibration=float(calibration[i]),
            shrinkage=float(shrinkage[i]),
        )
    return out


def read_device_references(delta: DeltaTables, model: ModelSpec, snapshot_version: int) -> dict[str, ReferenceModel]:
    """The per-device references a snapshot carries, by device (empty when it carries none)."""
    table = versioned(DEVICE_REFERENCES_TABLE, model.feature_set_version)
    if not delta.exists(table):
        return {}
    rows = delta.read(table).where((F.col("model") == model.name) & (F.col("snapshot_version") == snapshot_version))
    return references_from_arrow(rows.select(*_REFERENCE_FIELDS).toArrow())
