"""`device_objects` (the `Device` backing table in Delta) and `device_online_store` (its Redis projection).

Both run hourly (`prehydration_schedule`) and as soon as a new `device_features_1d` partition lands
(`prehydration_sensor`), in one job whose runs never overlap.
"""

import time
from collections import Counter
from datetime import UTC, datetime

import dagster as dg
from pyspark.sql import functions as F

from fs_assets.features.assets import device_features_1d, feature_assets
from fs_assets.freshness import freshness_policy
from fs_assets.ingest.assets import device_registry
from fs_assets.metadata import latest_key, latest_value, table_metadata
from fs_assets.ontology.objects import device_objects_frame, model_vectors_frame, objects_arrow
from fs_domain import slas
from fs_domain.device import DEVICE, SERVED_STATUSES
from fs_domain.features import WINDOWS_BY_MINUTES
from fs_domain.models import MODEL_SPECS, pinned_models
from fs_domain.tables import ANOMALY_SCORES_TABLE, OBJECTS_TABLE, REGISTRY_TABLE, versioned
from fs_resources.delta import DeltaTables
from fs_resources.feature_store import FeatureStoreResource
from fs_resources.online import OnlineStoreUnavailable, encode_timestamp
from fs_resources.redis_store import RedisResource
from fs_resources.schemas import device_column_schema

OBJECTS_POOL = f"delta_{OBJECTS_TABLE}"
ONLINE_POOL = "redis_online_store"


@dg.asset(
    group_name="ontology",
    kinds={"spark", "delta"},
    deps=[device_features_1d, device_registry, dg.AssetDep(ANOMALY_SCORES_TABLE, partition_mapping=dg.AllPartitionMapping())],
    pool=OBJECTS_POOL,
    freshness_policy=freshness_policy(slas.DEVICE_OBJECT),
    description=(
        f"The `{DEVICE.name}` object's backing table: one row per registered device with its registry attributes, "
        "the latest complete 1-day window's pre-hydrated features and the latest anomaly score."
    ),
    metadata={"dagster/column_schema": device_column_schema(), "delta_table": OBJECTS_TABLE},
)
def device_objects(context: dg.AssetExecutionContext, delta: DeltaTables, feature_store: FeatureStoreResource) -> dg.MaterializeResult:
    started = time.monotonic()
    hydrated_at = datetime.now(UTC)
    features = delta.read(feature_store.features_table())
    registry = delta.read(REGISTRY_TABLE)
    # The score shown is the score model's on the version it is pinned to, which may differ from
    # the object's own: moving that model to v2 moves the score, not the object.
    score_model = feature_store.device_score_model()
    scores_table = versioned(ANOMALY_SCORES_TABLE, score_model.feature_set_version)
    scores = delta.read(scores_table).where(F.col("model") == score_model.name) if delta.exists(scores_table) else None
    objects = device_objects_frame(features, registry, scores, hydrated_at).cache()
    summary = objects.agg(
        F.count(F.lit(1)).alias("devices"),
        F.count("features_window_end").alias("with_features"),
        F.count("latest_anomaly_score").alias("with_score"),
        F.max("features_window_end").alias("latest"),
    ).first()
    by_status = {r["status"]: r["count"] for r in objects.groupBy("status").count().collect()}
    write = delta.overwrite(objects, feature_store.objects_table(), run_id=context.run_id)
    objects.unpersist()
    without = summary["devices"] - summary["with_features"]
    if without:
        context.log.warning(f"{without} devices have no complete 1-day window yet; their feature properties are NULL")
    return dg.MaterializeResult(
        metadata=write.metadata()
        | {
            "hydrated_at": encode_timestamp(hydrated_at),
            "devices_by_status": dg.MetadataValue.json(by_status),
            "devices_without_features": without,
            "devices_with_anomaly_score": summary["with_score"],
            "anomaly_scores": f"{scores_table}, model {score_model.name}"
            if scores is not None
            else f"{scores_table} not written yet: latest_anomaly_score is NULL",
            latest_key("features_window_end"): latest_value(summary["latest"]),
            "feature_set_version": feature_store.version(),
            "seconds": round(time.monotonic() - started, 2),
        }
    )


# The feature assets whose windows the served models' vectors come from.
VECTOR_SOURCES = [
    a for a in feature_assets if a.key.path[-1] in {WINDOWS_BY_MINUTES[m.window_minutes].asset_name for m in MODEL_SPECS if m.served_online}
]


@dg.asset(
    group_name="ontology",
    kinds={"redis"},
    deps=[device_objects, *VECTOR_SOURCES],
    pool=ONLINE_POOL,
    freshness_policy=freshness_policy(slas.DEVICE_OBJECT),
    description=(
        "Projects `device_objects` into Redis: one hash per served device under `fs:{version}:device:`, "
        "atomic per device, newest snapshot wins, TTL 2 h by default; retired and unknown devices are removed. "
        "Beside it, each served model's latest input vector per device under `fs:{version}:model:{model}:`, the version "
        "being the one the model is pinned to."
    ),
)
def device_online_store(
    context: dg.AssetExecutionContext, delta: DeltaTables, feature_store: FeatureStoreResource, redis: RedisResource
) -> dg.MaterializeResult:
    table = feature_store.objects_table()
    source_version = delta.version(table)
    read_started = time.monotonic()
    objects = objects_arrow(delta.read(table, version=source_version))
    read_seconds = time.monotonic() - read_started
    hydrated = set(objects.column("hydrated_at").unique().to_pylist())
    if not hydrated:
        raise dg.Failure(description=f"{table} v{source_version} has no devices: the device registry is empty")
    if len(hydrated) != 1:
        raise dg.Failure(description=f"{table} v{source_version} holds {len(hydrated)} hydration times; expected one snapshot")
    (hydrated_at,) = hydrated
    # The one writer of the online store: the only place the embedded server may be started.
    store = redis.writable_online_store(feature_store.version(), feature_store.pins())
    ttl = redis.resolved_ttl_seconds()
    url = redis.redacted_url()
    context.log.info(f"projecting {objects.num_rows:,} devices of {table} v{source_version} into {url} under {store.prefix}")
    report = _project(context, store, redis, objects, hydrated_at, ttl, f"{table}@v{source_version}")
    if report.superseded:
        context.log.warning(f"superseded: {'; '.join(report.notes)}")
    vectors = _project_vectors(context, delta, feature_store, store, table, source_version, hydrated_at, ttl, redis)
    statuses = Counter(objects.column("status").to_pylist())
    return dg.MaterializeResult(
        metadata={
            "redis": url,
            "key_prefix": store.prefix,
            "ttl_seconds": ttl,
            "source": f"{table}@v{source_version}",
            "hydrated_at": report.hydrated_at,
            "devices_written": report.written,
            "retired_removed": report.removed,
            "unknown_removed": report.orphans_removed,
            "skipped_newer_entry": report.skipped_newer,
            "live_devices": report.live_devices,
            "served_statuses": dg.MetadataValue.json({s: statuses.get(s, 0) for s in SERVED_STATUSES}),
            "superseded": report.superseded,
            "retries": report.retries,
            "read_seconds": round(read_seconds, 2),
            "write_seconds": round(report.seconds, 2),
            "model_vectors": table_metadata(
                vectors,
                columns=[
                    "model",
                    "feature_set_version",
                    "key_prefix",
                    "window_minutes",
                    "vectors_written",
                    "removed",
                    "latest_window_end",
                    "seconds",
                ],
            ),
        }
    )


def _project(context, store, redis: RedisResource, rows, hydrated_at, ttl: int, source: str, model: str | None = None):
    """One projection into Redis (the `Device` objects, or a model's vectors); Redis unreachable
    after the retries fails the run saying so."""
    try:
        return store.project(
            rows, hydrated_at, ttl_seconds=ttl, source=source, retries=redis.write_retries, log=context.log.warning, model=model
        )
    except OnlineStoreUnavailable as exc:
        what = f"{model} vectors: " if model else ""
        raise dg.Failure(description=f"{what}{exc}", metadata={"redis": redis.redacted_url(), "source": source}) from exc


def _project_vectors(context, delta, feature_store, store, objects_table_name, objects_version, hydrated_at, ttl, redis) -> list[dict]:
    """Each served model's latest input vector per served device, from the features of the version
    it is pinned to and under that version's prefix, with the objects' hydration time (so the
    newest-wins guard orders them with the objects)."""
    objects = delta.read(objects_table_name, version=objects_version)
    rows = []
    for model in pinned_models(feature_store.pins()).values():
        if not model.served_online:
            continue
        started = time.monotonic()
        features_table = feature_store.features_table(model.feature_set_version)
        if not delta.exists(features_table):
            # A model just pinned to a version whose features are not computed yet: the objects and
            # the other models are still projected; its vectors follow the first features run.
            context.log.warning(f"{model.key}: no {features_table} yet, so no vectors; materialize the feature assets")
            continue
        features_version = delta.version(features_table)
        frame = model_vectors_frame(delta.read(features_table, version=features_version), objects, model, hydrated_at)
        vectors = frame.toArrow()
        report = _project(context, store, redis, vectors, hydrated_at, ttl, f"{features_table}@v{features_version}", model=model.name)
        ends = [e for e in vectors.column("window_end").to_pylist() if e is not None]
        rows.append(
            {
                "model": model.name,
                "feature_set_version": model.feature_set_version,
                "key_prefix": store.layout(model.name).prefix,
                "window_minutes": model.window_minutes,
                "vectors_written": report.written,
                "removed": report.orphans_removed,
                "latest_window_end": max(ends).isoformat() if ends else "none",
                "seconds": round(time.monotonic() - started, 2),
            }
        )
    return rows


ontology_assets = [device_objects, device_online_store]
