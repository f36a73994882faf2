"""Checks on the online store: offline/online reconciliation, pre-hydration lag, live key count."""

import math
import random
from datetime import UTC, datetime

import dagster as dg
from pydantic import Field
from pyspark.sql import functions as F

from fs_assets.metadata import table_metadata
from fs_domain import slas
from fs_domain.device import DEVICE, SERVED_STATUSES
from fs_resources.delta import DeltaTables
from fs_resources.feature_store import FeatureStoreResource
from fs_resources.redis_store import RedisResource

ONLINE_STORE = dg.AssetKey("device_online_store")

CHECK_RECONCILIATION = "check_online_reconciliation"
CHECK_LAG = "check_prehydration_lag"
CHECK_KEY_COUNT = "check_online_key_count"
# Metadata of the lag check: true when the store is empty or expired, so a pre-hydration is due now.
REFILL_NEEDED = "refill_needed"

# Pre-hydration lag (DESIGN.md, monitoring): within 1 h; alert past 90 minutes.
LAG_TARGET = slas.DEVICE_OBJECT.target
LAG_ALERT = slas.DEVICE_OBJECT.alert

# Training-serving consistency (seed document, weekly reconciliation): 1,000 random device-window
# pairs, tolerance 1e-6 on floats, alert when more than 0.1 % of them differ.
RECONCILIATION_SAMPLE = 1000
RECONCILIATION_TOLERANCE = 1e-6
RECONCILIATION_MAX_MISMATCH = 0.001
READ_CHUNK = 1000


def values_agree(offline: object, online: object) -> bool:
    if offline is None or online is None:
        return offline is None and online is None
    if isinstance(offline, float):
        if not isinstance(online, float):
            return False
        if math.isnan(offline) or math.isnan(online):
            return math.isnan(offline) and math.isnan(online)
        return abs(offline - online) <= RECONCILIATION_TOLERANCE * max(1.0, abs(offline))
    return type(offline) is type(online) and offline == online


def _expected_objects(session, delta: DeltaTables, feature_store: FeatureStoreResource, device_ids: list[str] | None) -> dict[str, dict]:
    """Per device: registry attributes and score from `device_objects`, feature values straight from
    `device_features` at the object's window (so a bug in building objects shows up too)."""
    objects = delta.read(feature_store.objects_table()).where(F.col("status").isin(*SERVED_STATUSES))
    if device_ids is not None:
        objects = objects.where(F.col("device_id").isin(device_ids))
    feature_props = DEVICE.from_source("feature")
    minutes = DEVICE.feature_window_minutes
    windows = (
        delta.read(feature_store.features_table())
        .where(F.col("window_duration_minutes") == minutes)
        .select(
            "device_id",
            F.col("window_end").alias("features_window_end"),
            *[F.col(p.feature).alias(f"_offline_{p.name}") for p in feature_props],
        )
    )
    joined = objects.join(windows, ["device_id", "features_window_end"], "left")
    for p in feature_props:
        joined = joined.withColumn(p.name, F.col(f"_offline_{p.name}"))
    table = joined.select(*DEVICE.property_names).toArrow()
    rows = table.to_pylist()
    return {r["device_id"]: r for r in rows}


class ReconciliationConfig(dg.Config):
    sample_size: int = Field(default=RECONCILIATION_SAMPLE, ge=0, description="Device-window pairs to compare; 0 = every served device.")


@dg.asset_check(
    asset=ONLINE_STORE,
    name=CHECK_RECONCILIATION,
    description=(
        "Training-serving consistency: random served devices read online equal the offline store "
        "(`device_features` at the same window, registry and score from `device_objects`) within 1e-6; "
        "fails when more than 0.1 % of the pairs differ. `sample_size: 0` compares every device."
    ),
)
def check_online_reconciliation(
    context: dg.AssetCheckExecutionContext,
    config: ReconciliationConfig,
    delta: DeltaTables,
    feature_store: FeatureStoreResource,
    redis: RedisResource,
) -> dg.AssetCheckResult:
    session = delta.session
    sample_size = config.sample_size
    served = [
        r["device_id"]
        for r in delta.read(feature_store.objects_table()).where(F.col("status").isin(*SERVED_STATUSES)).select("device_id").collect()
    ]
    seed = random.randrange(2**31)
    sample = sorted(served) if sample_size == 0 or sample_size >= len(served) else sorted(random.Random(seed).sample(served, sample_size))
    expected = _expected_objects(session, delta, feature_store, None if len(sample) == len(served) else sample)
    store = redis.online_store(feature_store.version())
    compared = [p for p in DEVICE.property_names if p != "hydrated_at"]
    mismatches = []
    for start in range(0, len(sample), READ_CHUNK):
        chunk = sample[start : start + READ_CHUNK]
        for device_id, online in zip(chunk, store.get_online_features(chunk)):
            offline = expected[device_id]
            if online is None:
                mismatches.append({"device_id": device_id, "property": "(entry)", "offline": "present", "online": "no live entry"})
                continue
            for name in compared:
                if not values_agree(offline[name], online[name]):
                    mismatches.append(
                        {"device_id": device_id, "property": name, "offline": repr(offline[name]), "online": repr(online[name])}
                    )
    differing = len({m["device_id"] for m in mismatches})
    fraction = differing / len(sample) if sample else 0.0
    return dg.AssetCheckResult(
        passed=fraction <= RECONCILIATION_MAX_MISMATCH,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "pairs_compared": len(sample),
            "pairs_differing": differing,
            "fraction_differing": round(fraction, 6),
            "threshold": RECONCILIATION_MAX_MISMATCH,
            "tolerance": RECONCILIATION_TOLERANCE,
            "served_devices": len(served),
            "sample_seed": seed,
            "differences": table_metadata(mismatches[:20], columns=["device_id", "property", "offline", "online"]),
        },
    )


@dg.asset_check(
    asset=ONLINE_STORE,
    name=CHECK_LAG,
    description="Time since the last complete projection into Redis: warn past 60 minutes, error past 90 (or when Redis holds none).",
)
def check_prehydration_lag(feature_store: FeatureStoreResource, redis: RedisResource) -> dg.AssetCheckResult:
    store = redis.online_store(feature_store.version())
    state = store.projection_state()
    if state is None or state.hydrated_at is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description="Redis holds no complete projection (never pre-hydrated, or restarted empty): a pre-hydration is requested",
            metadata={
                "redis": redis.redacted_url(),
                "lag_minutes": None,
                "threshold_minutes": LAG_ALERT.total_seconds() / 60,
                REFILL_NEEDED: True,
            },
        )
    lag = datetime.now(UTC) - state.hydrated_at
    live = len(store.live_device_ids())
    # Entries outlived by their TTL are gone although the projection state remains: as empty as a restart.
    expired = lag.total_seconds() >= redis.resolved_ttl_seconds() or (live == 0 and (state.live_devices or 0) > 0)
    severity = dg.AssetCheckSeverity.ERROR if lag > LAG_ALERT or expired else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(
        passed=lag <= LAG_TARGET and not expired,
        severity=severity,
        description="the online store's entries have expired: a pre-hydration is requested" if expired else None,
        metadata={
            "lag_minutes": round(lag.total_seconds() / 60, 1),
            "target_minutes": LAG_TARGET.total_seconds() / 60,
            "threshold_minutes": LAG_ALERT.total_seconds() / 60,
            "last_hydrated_at": state.hydrated_at.isoformat(),
            "source": state.source or "",
            "live_keys": live,
            "live_devices_at_projection": state.live_devices or 0,
            REFILL_NEEDED: expired,
        },
    )


@dg.asset_check(
    asset=ONLINE_STORE,
    name=CHECK_KEY_COUNT,
    description="Live device entries in Redis equal the served (active or maintenance) devices of `device_objects`.",
)
def check_online_key_count(delta: DeltaTables, feature_store: FeatureStoreResource, redis: RedisResource) -> dg.AssetCheckResult:
    objects = delta.read(feature_store.objects_table())
    served = {r["device_id"] for r in objects.where(F.col("status").isin(*SERVED_STATUSES)).select("device_id").collect()}
    live = redis.online_store(feature_store.version()).live_device_ids()
    missing, unexpected = sorted(served - live), sorted(live - served)
    return dg.AssetCheckResult(
        passed=not missing and not unexpected,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "live_keys": len(live),
            "served_devices": len(served),
            "missing": len(missing),
            "unexpected": len(unexpected),
            "missing_examples": dg.MetadataValue.json(missing[:20]),
            "unexpected_examples": dg.MetadataValue.json(unexpected[:20]),
        },
    )


online_checks = [check_online_reconciliation, check_prehydration_lag, check_online_key_count]
