"""The store on S3: a day from landing to `device_objects` with the landing zone and every Delta table
under `FS_DATA_ROOT=s3a://...`, against a real S3-compatible endpoint on 127.0.0.1 (moto's server).

Shares the session's Spark: the session starts with Hadoop's S3 connector and the endpoint's
settings whenever the collected tests include this one (tests/conftest.py). The quick tests check
the configuration an `s3a://` root gets: the connector of pyspark's Hadoop, the endpoint, the cache."""

from __future__ import annotations

from pathlib import Path

import boto3
import dagster as dg
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pyspark
import pytest
from pyspark.sql import functions as F

from fs_assets.features.assets import feature_assets
from fs_assets.ingest.assets import clean_sensor_readings, device_registry
from fs_assets.ontology.assets import device_objects
from fs_domain.tables import CLEAN_TABLE, LEDGER_TABLE, QUARANTINE_TABLE, REGISTRY_TABLE, features_table, objects_table
from fs_resources.delta import DeltaTables
from fs_resources.feature_store import FeatureStoreResource
from fs_resources.simulator.fleet import FleetSpec, generate
from fs_resources.spark import DeltaSparkResource, delta_maven_coordinate, delta_spark_conf
from tests.conftest import SIM_START

DEVICES = 3
DAY = SIM_START.isoformat()
BUCKET = "fleet-store"
PREFIX = "feature-store"
# A gateway's file whose name Spark would take as a pattern if it were not escaped.
ODD_NAME = "gw[1] {a,b}*.parquet"


def land(s3, local_root: Path) -> dict[str, int]:
    """Upload the simulated landing zone, the day's readings split in two files (one oddly named); rows per file."""
    rows_per_file = {}
    for path in sorted((local_root / "landing").rglob("*")):
        if not path.is_file():
            continue
        key = f"{PREFIX}/{path.relative_to(local_root).as_posix()}"
        if path.suffix != ".parquet":
            s3.upload_file(str(path), BUCKET, key)
            continue
        readings = pq.read_table(path)
        first_device = readings.column("device_id")[0]
        split = {
            path.name: readings.filter(pc.equal(readings.column("device_id"), first_device)),
            ODD_NAME: readings.filter(pc.not_equal(readings.column("device_id"), first_device)),
        }
        for name, part in split.items():
            out = path.with_name(f"split-{len(rows_per_file)}.parquet")
            pq.write_table(part, out)
            s3.upload_file(str(out), BUCKET, f"{key.rsplit('/', 1)[0]}/{name}")
            rows_per_file[name] = part.num_rows
    return rows_per_file


@pytest.mark.e2e
def test_a_day_runs_from_landing_to_device_objects_on_s3(spark, s3_endpoint, tmp_path, monkeypatch, instance):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=BUCKET)
    generate(FleetSpec.clean(devices=DEVICES, start=SIM_START, days=1, seed=3), str(tmp_path / "simulated"))
    landed = land(s3, tmp_path / "simulated")
    assert len(landed) == 2 and all(landed.values())

    root = f"s3a://{BUCKET}/{PREFIX}"
    monkeypatch.setenv("FS_DATA_ROOT", root)
    # Anything written to a local path by mistake would land under the working folder as `s3a:/...`.
    monkeypatch.chdir(tmp_path)
    resources = {"spark": DeltaSparkResource(), "delta": DeltaTables(spark=DeltaSparkResource()), "feature_store": FeatureStoreResource()}
    assert dg.materialize([device_registry], resources=resources, instance=instance).success
    # The step's own accounting check runs; the table checks are tested where clean readings are the subject.
    assert dg.materialize([clean_sensor_readings], partition_key=DAY, resources=resources, instance=instance).success
    assert dg.materialize(feature_assets, partition_key=DAY, resources=resources, instance=instance).success
    assert dg.materialize([device_objects], resources=resources, instance=instance).success

    delta = DeltaTables(spark=DeltaSparkResource())
    assert delta.path(CLEAN_TABLE).startswith(f"{root}/delta/")
    clean = delta.read(CLEAN_TABLE).where(F.col("reading_date") == DAY)
    assert clean.count() == sum(landed.values())
    assert clean.select("device_id").distinct().count() == DEVICES
    assert not delta.exists(QUARANTINE_TABLE) or delta.read(QUARANTINE_TABLE).count() == 0
    ledgered = {row["source_file"].rsplit("/", 1)[-1] for row in delta.read(LEDGER_TABLE).select("source_file").collect()}
    assert ODD_NAME in ledgered, ledgered
    assert delta.read(features_table()).count() == DEVICES * (96 + 24 + 1)
    assert delta.read(objects_table()).select("device_id").distinct().count() == DEVICES

    # The tables are in the bucket, each with its Delta log, and nothing went to a local folder.
    keys = {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET) for o in page.get("Contents", [])}
    for table in (REGISTRY_TABLE, CLEAN_TABLE, LEDGER_TABLE, features_table(), objects_table()):
        assert f"{PREFIX}/delta/{table}/_delta_log/00000000000000000000.json" in keys, table
    assert not (tmp_path / "s3a:").exists()


def bundled_hadoop() -> str:
    (jar,) = (Path(pyspark.__file__).parent / "jars").glob("hadoop-client-api-*.jar")
    return jar.name.removeprefix("hadoop-client-api-").removesuffix(".jar")


@pytest.mark.unit
def test_an_s3a_root_resolves_the_s3_connector_of_the_bundled_hadoop_and_sets_the_endpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("FS_JARS_CACHE", str(tmp_path / "jars"))
    monkeypatch.setenv("FS_DATA_ROOT", "s3a://fleet-store/feature-store")
    monkeypatch.setenv("FS_S3_ENDPOINT", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    conf = delta_spark_conf()
    assert conf["spark.jars.packages"].split(",") == [delta_maven_coordinate(), f"org.apache.hadoop:hadoop-aws:{bundled_hadoop()}"]
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    # Credentials stay in the environment, where the connector's default chain reads them.
    assert not any("secret" in value or "key-id" in value for value in conf.values())

    monkeypatch.delenv("FS_S3_ENDPOINT")
    on_aws = delta_spark_conf()
    assert "spark.hadoop.fs.s3a.endpoint" not in on_aws and on_aws["spark.hadoop.fs.s3a.path.style.access"] == "false"

    monkeypatch.setenv("FS_DATA_ROOT", str(tmp_path / "data"))
    local = delta_spark_conf()
    assert local["spark.jars.packages"] == delta_maven_coordinate()
    assert not any(key.startswith("spark.hadoop.fs.s3a.") for key in local)


@pytest.mark.unit
def test_the_s3_connector_is_cached_beside_delta_and_used_without_network_once_resolved(tmp_path, monkeypatch):
    cache = tmp_path / "jars"
    monkeypatch.setenv("FS_JARS_CACHE", str(cache))
    monkeypatch.setenv("FS_DATA_ROOT", "s3a://fleet-store/feature-store")
    delta_only = cache / delta_maven_coordinate().replace(":", "_")
    with_s3 = cache / f"{delta_only.name}+org.apache.hadoop_hadoop-aws_{bundled_hadoop()}"
    for folder, jars in ((delta_only, ["delta.jar"]), (with_s3, ["delta.jar", "hadoop-aws.jar", "bundle.jar"])):
        folder.mkdir(parents=True)
        for jar in jars:
            (folder / jar).write_bytes(b"")
        (folder / "COMPLETE").write_text("resolved\n")
    conf = delta_spark_conf()
    assert "spark.jars.packages" not in conf
    assert sorted(Path(j).name for j in conf["spark.jars"].split(",")) == ["bundle.jar", "delta.jar", "hadoop-aws.jar"]
    assert {Path(j).parent for j in conf["spark.jars"].split(",")} == {with_s3}
    monkeypatch.setenv("FS_DATA_ROOT", str(tmp_path / "data"))
    assert [Path(j).parent for j in delta_spark_conf()["spark.jars"].split(",")] == [delta_only]
