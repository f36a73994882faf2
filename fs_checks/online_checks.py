"""Checks on the online store: offline/online reconciliation of every served value, pre-hydration lag, live key count."""

import math
import random
from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field
from pyspark.sql import functions as F

from fs_assets.metadata import table_metadata
from fs_assets.ontology.objects import vector_first_day
from fs_assets.timestamps import instant
from fs_checks.results import check_result
from fs_domain import slas
from fs_domain.device import DEVICE, SERVED_STATUSES
from fs_domain.models import model_spec, pinned_models, vector_columns
from fs_domain.tables import SERVED_VALUES_TABLE, features_table
from fs_domain.verdicts import Verdict, guide_section
from fs_resources.delta import DeltaTables
from fs_resources.feature_store import FeatureStoreResource
from fs_resources.redis_store import RedisResource

ONLINE_STORE = dg.AssetKey("device_online_store")

CHECK_RECONCILIATION = "check_online_reconciliation"
CHECK_LAG = "check_prehydration_lag"
CHECK_KEY_COUNT = "check_online_key_count"
CHECK_SERVED_SKEW = "check_served_value_skew"
# Metadata of the lag check: true when the store is empty or expired, so a pre-hydration is due now.
REFILL_NEEDED = "refill_needed"

# Pre-hydration lag (DESIGN.md, monitoring): within 1 h; alert past 90 minutes.
# The 60-minute target is the hourly schedule's own bound: the watch at the top of the hour finds
# the last projection a queue wait past it while the next one runs, so judging it would warn every
# hour on a healthy store. The lag check judges the alert (as the Device object's hourly clock does).
LAG_TARGET = slas.DEVICE_OBJECT.target
LAG_ALERT = slas.DEVICE_OBJECT.alert
# What the online store is projected from: before its first write, an empty Redis is not a failure.
FIRST_PROJECTED_FROM = dg.AssetKey("device_features_1d")

# Training-serving consistency (DESIGN.md, online store): 1,000 random devices, each compared on its
# `Device` object and on every served model's input vector (a device-window pair each), every
# served value against the offline tables, absolute tolerance 1e-6; fails when more than 0.1 % of
# the compared values differ.
RECONCILIATION_SAMPLE = 1000
RECONCILIATION_TOLERANCE = 1e-6
RECONCILIATION_MAX_MISMATCH = 0.001
READ_CHUNK = 1000

GUIDE_LAG = guide_section("Online store: pre-hydration lag and live keys")
WHAT_TO_DO_LAG = f"Redis is behind the offline store: is prehydration_job running, is Redis reachable? {GUIDE_LAG}"
WHAT_TO_DO_KEYS = f"Redis and the served devices differ: run prehydration_job; {GUIDE_LAG}"
# Training-serving skew on what was actually served (fs-serve's served-value log): every logged value of a
# model's vector against the offline features of the same window, over the last day logged.
SERVED_SKEW_DAYS = 1
SERVED_SKEW_MAX_DIFFERING = 0
WHAT_TO_DO_SERVED_SKEW = (
    f"Values fs-serve answered differ from the offline features of their window: read `differences`; "
    f"{guide_section('Online store: served-value skew')}"
)
WHAT_TO_DO_RECONCILIATION = f"Served values differ from the offline store: read `differences`, re-project, compare again; {guide_section('Online store: reconciliation')}"


def values_agree(offline: object, online: object) -> bool:
    """Equal, or for doubles within 1e-6 absolute; NULL only matches NULL, types must match."""
    if offline is None or online is None:
        return offline is None and online is None
    if isinstance(offline, float):
        if not isinstance(online, float):
            return False
        if math.isnan(offline) or math.isnan(online):
            return math.isnan(offline) and math.isnan(online)
        return abs(offline - online) <= RECONCILIATION_TOLERANCE
    return type(offline) is type(online) and offline == online


def _expected_objects(delta: DeltaTables, feature_store: FeatureStoreResource, device_ids: list[str]) -> dict[str, dict]:
    """Per device: registry attributes and score from `device_objects`, feature values straight from
    `device_features` at the object's window (so a bug in building objects shows up too)."""
    objects = delta.read(feature_store.objects_table()).where(F.col("device_id").isin(device_ids))
    feature_props = DEVICE.from_source("feature")
    windows = (
        delta.read(feature_store.features_table())
        .where(F.col("window_duration_minutes") == DEVICE.feature_window_minutes)
        .select(
            "device_id",
            F.col("window_end").alias("features_window_end"),
            *[F.col(p.feature).alias(f"_offline_{p.name}") for p in feature_props],
        )
    )
    joined = objects.join(windows, ["device_id", "features_window_end"], "left")
    for p in feature_props:
        joined = joined.withColumn(p.name, F.col(f"_offline_{p.name}"))
    return {r["device_id"]: r for r in joined.select(*DEVICE.property_names).toArrow().to_pylist()}


def _expected_vectors(
    delta: DeltaTables, feature_store: FeatureStoreResource, model, device_ids: list[str], hydrated_at
) -> dict[str, dict]:
    """Per device: the model's latest window closed by `hydrated_at` (within the vector lookback),
    its features read straight from `device_features` of the version the model is pinned to."""
    table = feature_store.features_table(model.feature_set_version)
    if not delta.exists(table):
        return {}
    features = delta.read(table)
    first_day = vector_first_day(features, model, hydrated_at)
    if first_day is None:
        return {}
    windows = features.where(
        (F.col("window_duration_minutes") == model.window_minutes)
        & F.col("device_id").isin(device_ids)
        & (F.col("window_date") >= F.lit(first_day))
        & (F.col("window_end") <= instant(hydrated_at))
    )
    latest = windows.groupBy("device_id").agg(F.max("window_end").alias("window_end"))
    names = [c for c, _ in vector_columns(model) if c != "hydrated_at"]
    rows = windows.join(latest, ["device_id", "window_end"]).select("device_id", *names).toArrow().to_pylist()
    return {r["device_id"]: r for r in rows}


class ReconciliationConfig(dg.Config):
    sample_size: int = Field(default=RECONCILIATION_SAMPLE, ge=0, description="Devices to compare; 0 = every served device.")


@dg.asset_check(
    asset=ONLINE_STORE,
    name=CHECK_RECONCILIATION,
    description=(
        "Training-serving consistency: for random served devices, every value served online (the `Device` object and "
        "each served model's input vector) equals the offline store (`device_features` at the same window, registry "
        "and score from `device_objects`) within 1e-6 absolute; fails when more than 0.1 % of the compared values "
        "differ. `sample_size: 0` compares every device."
    ),
)
def check_online_reconciliation(
    context: dg.AssetCheckExecutionContext,
    config: ReconciliationConfig,
    delta: DeltaTables,
    feature_store: FeatureStoreResource,
    redis: RedisResource,
) -> dg.AssetCheckResult:
    sample_size = config.sample_size
    served = [
        r["device_id"]
        for r in delta.read(feature_store.objects_table()).where(F.col("status").isin(*SERVED_STATUSES)).select("device_id").collect()
    ]
    seed = random.randrange(2**31)
    sample = sorted(served) if sample_size == 0 or sample_size >= len(served) else sorted(random.Random(seed).sample(served, sample_size))
    store = redis.online_store(feature_store.version(), feature_store.pins())
    state = store.projection_state()
    hydrated_at = state.hydrated_at if state and state.hydrated_at else datetime.now(UTC)
    entries = [(None, [p for p in DEVICE.property_names if p != "hydrated_at"], _expected_objects(delta, feature_store, sample))]
    for model in pinned_models(feature_store.pins()).values():
        if model.served_online:
            fields = [c for c, _ in vector_columns(model) if c != "hydrated_at"]
            entries.append((model.name, fields, _expected_vectors(delta, feature_store, model, sample, hydrated_at)))
    mismatches, compared, per_entry = [], 0, []
    for model, fields, expected in entries:
        differing = 0
        for start in range(0, len(sample), READ_CHUNK):
            chunk = sample[start : start + READ_CHUNK]
            for device_id, online in zip(chunk, store.get_online_features(chunk, model=model)):
                offline = expected.get(device_id)
                if offline is None and online is None:
                    continue
                compared += len(fields)
                if offline is None or online is None:
                    differing += len(fields)
                    side = "no live entry" if online is None else "served"
                    mismatches.append(
                        {
                            "entry": model or DEVICE.name,
                            "device_id": device_id,
                            "field": "(entry)",
                            "offline": "present" if offline else "none",
                            "online": side,
                        }
                    )
                    continue
                for name in fields:
                    if not values_agree(offline[name], online[name]):
                        differing += 1
                        mismatches.append(
                            {
                                "entry": model or DEVICE.name,
                                "device_id": device_id,
                                "field": name,
                                "offline": repr(offline[name]),
                                "online": repr(online[name]),
                            }
                        )
        per_entry.append(
            {
                "entry": model or DEVICE.name,
                "feature_set_version": store.layout(model).feature_set_version,
                "fields": len(fields),
                "values_differing": differing,
            }
        )
    differing = sum(e["values_differing"] for e in per_entry)
    fraction = differing / compared if compared else 0.0
    return check_result(
        Verdict(fraction, RECONCILIATION_MAX_MISMATCH, "<=", "share of compared values differing", WHAT_TO_DO_RECONCILIATION),
        context=context,
        metadata={
            "devices_compared": len(sample),
            "values_compared": compared,
            "values_differing": differing,
            "pairs_differing": len({(m["entry"], m["device_id"]) for m in mismatches}),
            "fraction_differing": round(fraction, 6),
            "tolerance": RECONCILIATION_TOLERANCE,
            "served_devices": len(served),
            "sample_seed": seed,
            "per_entry": table_metadata(per_entry, columns=["entry", "feature_set_version", "fields", "values_differing"]),
            "differences": table_metadata(mismatches[:20], columns=["entry", "device_id", "field", "offline", "online"]),
        },
    )


@dg.asset_check(
    asset=ONLINE_STORE,
    name=CHECK_LAG,
    description="Time since the last complete projection into Redis: pages past 90 minutes (or when Redis holds none once there is something to project).",
)
def check_prehydration_lag(
    context: dg.AssetCheckExecutionContext, feature_store: FeatureStoreResource, redis: RedisResource
) -> dg.AssetCheckResult:
    # Probed as it is: the check never starts the server it judges.
    down = redis.unreachable()
    if down is not None:
        return check_result(
            Verdict(
                observed="unreachable",
                threshold="reachable",
                comparison="==",
                unit="",
                what_to_do=f"start Redis (or fix REDIS_URL), then run prehydration_job; see {GUIDE_LAG}",
                asset=ONLINE_STORE.to_user_string(),
            ),
            context=context,
            description=down,
            metadata={"redis": redis.redacted_url(), REFILL_NEEDED: False},
        )
    store = redis.online_store(feature_store.version())
    state = store.projection_state()
    if (state is None or state.hydrated_at is None) and context.instance.get_latest_materialization_event(FIRST_PROJECTED_FROM) is None:
        # A fresh store: nothing has been computed that Redis could hold; the first 1-day features
        # run pre-hydrates, and the Device object's own clock pages if it never does.
        return check_result(
            Verdict(0, 0, ">=", "complete projections in Redis", WHAT_TO_DO_LAG),
            context=context,
            description=f"nothing to project yet: {FIRST_PROJECTED_FROM.to_user_string()} has never been materialized",
            metadata={"redis": redis.redacted_url(), REFILL_NEEDED: False},
        )
    if state is None or state.hydrated_at is None:
        # Never pre-hydrated, or restarted empty: a refill is requested at once, and the store is late
        # only once a projection has been owed for the lag's alert (since the last projection this
        # instance recorded, else since the features were first written). Judged at once, a fresh
        # store paged in the minutes between its first features and its first projection.
        owed_since = _projection_owed_since(context.instance)
        owed_minutes = round((datetime.now(UTC) - owed_since).total_seconds() / 60, 1)
        verdict = Verdict(owed_minutes, _minutes(LAG_ALERT), "<=", "minutes Redis has held no projection while one is owed", WHAT_TO_DO_LAG)
        return check_result(
            verdict,
            context=context,
            severity=dg.AssetCheckSeverity.ERROR,
            description="Redis holds no complete projection (never pre-hydrated, or restarted empty): a pre-hydration is requested; "
            + verdict.sentence(),
            metadata={"redis": redis.redacted_url(), "owed_since": owed_since.isoformat(), REFILL_NEEDED: True},
        )
    lag_minutes = round((datetime.now(UTC) - state.hydrated_at).total_seconds() / 60, 1)
    live = len(store.live_device_ids())
    verdict, expired = _lag_verdict(lag_minutes, redis.resolved_ttl_seconds() / 60, live, state.live_devices or 0)
    return check_result(
        verdict,
        context=context,
        severity=dg.AssetCheckSeverity.ERROR,
        description="the online store's entries have expired: a pre-hydration is requested" if expired else None,
        metadata={
            "lag_minutes": lag_minutes,
            "target_minutes": _minutes(LAG_TARGET),
            "alert_minutes": _minutes(LAG_ALERT),
            "last_hydrated_at": state.hydrated_at.isoformat(),
            "source": state.source or "",
            "live_keys": live,
            "live_devices_at_projection": state.live_devices or 0,
            REFILL_NEEDED: expired,
        },
    )


def _projection_owed_since(instance: dg.DagsterInstance) -> datetime:
    """When Redis last had to hold a projection: the last one this instance recorded, else the first
    write of the features it projects from."""
    last = instance.get_latest_materialization_event(ONLINE_STORE)
    if last is None:
        first = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=FIRST_PROJECTED_FROM), limit=1, ascending=True).records
        last = first[0].event_log_entry if first else None
    return datetime.fromtimestamp(last.timestamp, UTC) if last is not None else datetime.now(UTC)


def _minutes(span: timedelta) -> float:
    return span.total_seconds() / 60


def _lag_verdict(lag_minutes: float, ttl_minutes: float, live: int, projected: int) -> tuple[Verdict, bool]:
    """The lag check's judgement, and whether the entries have expired (a pre-hydration is due now)."""
    # Entries outlived by their TTL are gone although the projection state remains: as empty as a restart.
    if lag_minutes >= ttl_minutes:
        return Verdict(
            lag_minutes, ttl_minutes, "<", "minutes since the last projection (its entries live this long)", WHAT_TO_DO_LAG
        ), True
    if live == 0 and projected > 0:
        return Verdict(live, projected, ">=", "live device entries (as many as the last projection wrote)", WHAT_TO_DO_LAG), True
    return Verdict(lag_minutes, _minutes(LAG_ALERT), "<=", "minutes since the last projection", WHAT_TO_DO_LAG), False


@dg.asset_check(
    asset=ONLINE_STORE,
    name=CHECK_KEY_COUNT,
    description="Live device entries in Redis equal the served (active or maintenance) devices of `device_objects`.",
)
def check_online_key_count(
    context: dg.AssetCheckExecutionContext, delta: DeltaTables, feature_store: FeatureStoreResource, redis: RedisResource
) -> dg.AssetCheckResult:
    objects = delta.read(feature_store.objects_table())
    served = {r["device_id"] for r in objects.where(F.col("status").isin(*SERVED_STATUSES)).select("device_id").collect()}
    live = redis.online_store(feature_store.version()).live_device_ids()
    missing, unexpected = sorted(served - live), sorted(live - served)
    unit = "devices missing from Redis or not served"
    return check_result(
        Verdict(len(missing) + len(unexpected), 0, "==", unit, WHAT_TO_DO_KEYS),
        context=context,
        description=f"{len(live):,} live entries for {len(served):,} served devices: {len(missing):,} missing, {len(unexpected):,} unexpected",
        metadata={
            "live_keys": len(live),
            "served_devices": len(served),
            "missing": len(missing),
            "unexpected": len(unexpected),
            "missing_examples": dg.MetadataValue.json(missing[:20]),
            "unexpected_examples": dg.MetadataValue.json(unexpected[:20]),
        },
    )


@dg.asset_check(
    asset=ONLINE_STORE,
    name=CHECK_SERVED_SKEW,
    description=(
        "Training-serving skew on what was served: every value of a model's input vector that fs-serve logged "
        f"(`{SERVED_VALUES_TABLE}`, the last day) against the offline features of the same device and window, "
        "absolute tolerance 1e-6. Warns on any value differing or served for a window the offline store lacks."
    ),
)
def check_served_value_skew(context: dg.AssetCheckExecutionContext, delta: DeltaTables) -> dg.AssetCheckResult:
    def verdict(differing: int) -> Verdict:
        return Verdict(differing, SERVED_SKEW_MAX_DIFFERING, "<=", "served values differing from offline", WHAT_TO_DO_SERVED_SKEW)

    if not delta.exists(SERVED_VALUES_TABLE):
        return check_result(
            verdict(0),
            context=context,
            severity=dg.AssetCheckSeverity.WARN,
            description="nothing served and logged yet",
            metadata={"values_compared": 0},
        )
    since = (datetime.now(UTC) - timedelta(days=SERVED_SKEW_DAYS)).date()
    logged = (
        delta.read(SERVED_VALUES_TABLE)
        .where((F.col("served_date") >= F.lit(since)) & F.col("window_end").isNotNull())
        .dropDuplicates(["entry", "feature_set_version", "device_id", "window_end", "field"])
    )
    compared = differing = missing = 0
    examples: list[dict] = []
    per_model: list[dict] = []
    for r in logged.select("entry", "feature_set_version").distinct().collect():
        model = model_spec(r["entry"], r["feature_set_version"])
        served = logged.where((F.col("entry") == model.name) & (F.col("feature_set_version") == model.feature_set_version))
        offline = (
            delta.read(features_table(model.feature_set_version))
            .where(F.col("window_duration_minutes") == model.window_minutes)
            .select("device_id", "window_start", "window_end", F.explode(F.map_from_arrays(
                F.array(*[F.lit(f) for f in model.features]), F.array(*[F.col(f).cast("double") for f in model.features])
            )).alias("field", "offline"))
        )  # fmt: skip
        joined = served.join(offline, ["device_id", "window_start", "window_end", "field"], "left").withColumn(
            "agrees",
            F.col("value").eqNullSafe(F.col("offline")) | (F.abs(F.col("value") - F.col("offline")) <= F.lit(RECONCILIATION_TOLERANCE)),
        )
        counts = joined.agg(
            F.count("*").alias("n"),
            F.sum((~F.col("agrees")).cast("long")).alias("differing"),
            F.sum((F.col("offline").isNull() & F.col("value").isNotNull()).cast("long")).alias("missing"),
        ).first()
        compared += counts["n"] or 0
        differing += counts["differing"] or 0
        missing += counts["missing"] or 0
        per_model.append(
            {
                "model": model.name,
                "feature_set_version": model.feature_set_version,
                "values": counts["n"],
                "differing": counts["differing"] or 0,
            }
        )
        for e in joined.where(~F.col("agrees")).limit(20 - len(examples)).collect() if len(examples) < 20 else []:
            examples.append(
                {
                    "model": model.name,
                    "device_id": e["device_id"],
                    "window_end": str(e["window_end"]),
                    "field": e["field"],
                    "served": e["value"],
                    "offline": e["offline"],
                }
            )
    return check_result(
        verdict(differing),
        context=context,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "values_compared": compared,
            "values_differing": differing,
            "served_without_offline_window": missing,
            "since": since.isoformat(),
            "tolerance": RECONCILIATION_TOLERANCE,
            "per_model": table_metadata(per_model, columns=["model", "feature_set_version", "values", "differing"]),
            "differences": table_metadata(examples, columns=["model", "device_id", "window_end", "field", "served", "offline"]),
        },
    )


online_checks = [check_online_reconciliation, check_prehydration_lag, check_online_key_count, check_served_value_skew]
