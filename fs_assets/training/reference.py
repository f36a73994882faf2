"""Reference snapshots: written as a JSON model artifact and a row of `feature_reference_snapshots`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from fs_domain.tables import REFERENCE_TABLE
from fs_resources import settings
from fs_resources.delta import DeltaTables, DeltaWrite


@dataclass(frozen=True)
class ReferenceSnapshot:
    model: str
    version: int
    created_at: str
    window_minutes: int
    features: list[str]
    training_start: str | None
    training_end: str | None
    rows: int
    devices: int
    statistics: dict[str, dict]

    @classmethod
    def from_json(cls, text: str) -> ReferenceSnapshot:
        return cls(**json.loads(text))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False)


def artifact_path(model: str, version: int, root: str | None = None) -> Path:
    return Path(settings.data_root() if root is None else root) / "models" / model / "reference" / f"v{version}.json"


def next_snapshot_version(delta: DeltaTables, model: str) -> int:
    if not delta.exists(REFERENCE_TABLE):
        return 1
    from pyspark.sql import functions as F

    latest = delta.read(REFERENCE_TABLE).where(F.col("model") == model).agg(F.max("snapshot_version")).first()[0]
    return (latest or 0) + 1


def write_snapshot(delta: DeltaTables, snapshot: ReferenceSnapshot) -> tuple[Path, DeltaWrite]:
    """The JSON artifact first (atomically), then the Delta row that makes it the active snapshot."""
    path = artifact_path(snapshot.model, snapshot.version)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(snapshot.to_json())
    tmp.replace(path)
    row = [
        (
            snapshot.model,
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
    schema = (
        "model string, snapshot_version int, created_at string, window_minutes int, features array<string>, "
        "training_start string, training_end string, rows long, devices long, artifact string, snapshot_json string"
    )
    return path, delta.replace_partitions(
        delta.session.createDataFrame(row, schema), REFERENCE_TABLE, {"model": [snapshot.model], "snapshot_version": [snapshot.version]}
    )


def active_snapshot(delta: DeltaTables, model: str) -> ReferenceSnapshot | None:
    """The model's latest snapshot, or None before any was written."""
    if not delta.exists(REFERENCE_TABLE):
        return None
    from pyspark.sql import functions as F

    rows = delta.read(REFERENCE_TABLE).where(F.col("model") == model).orderBy(F.col("snapshot_version").desc()).limit(1).collect()
    return ReferenceSnapshot.from_json(rows[0]["snapshot_json"]) if rows else None
