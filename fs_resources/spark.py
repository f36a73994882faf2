"""One Delta-enabled Spark session per process, configured for a 2-core laptop by default.

The Delta Lake JARs are resolved from Maven Central by Spark's own package resolution the first
time (the coordinate comes from `delta.configure_spark_with_delta_pip`), then copied into a local
cache; every later start uses the cached JARs and needs no network. A data root on S3
(`FS_DATA_ROOT=s3a://...`) adds Hadoop's S3 connector (`hadoop-aws`, of the Hadoop version pyspark
bundles, and the AWS SDK it depends on), resolved and cached the same way.

Beside the JARs, `python -m fs_resources.spark` (in `make setup`) writes a class archive of the
driver JVM (Java's application class-data sharing): the classes a Delta workload loads, already
parsed and verified. Every run's driver maps it instead of loading those classes from the JARs
again, which is most of a cold start. The archive belongs to one Java installation and one Spark;
another one finds no archive of its own and starts as before.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from dagster_pyspark import PySparkResource
from pydantic import Field

from fs_resources import settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_LOCK = threading.Lock()

MIN_JAVA_MAJOR = 17
# How long a Delta table's history stays readable (log entries and removed files); VACUUM's
# default retention in the maintenance job is the same.
HISTORY_RETENTION_DAYS = 90


def delta_maven_coordinate() -> str:
    """The coordinate `configure_spark_with_delta_pip` asks for, e.g. io.delta:delta-spark_4.2_2.13:4.4.1."""
    from delta import configure_spark_with_delta_pip
    from pyspark.sql import SparkSession

    builder = configure_spark_with_delta_pip(SparkSession.builder)
    return builder._options["spark.jars.packages"]


def bundled_hadoop_version() -> str:
    """The Hadoop version pyspark ships (its `hadoop-client-api` JAR): `hadoop-aws` must be the same release."""
    import pyspark

    for jar in (Path(pyspark.__file__).parent / "jars").glob("hadoop-client-api-*.jar"):
        return jar.name.removeprefix("hadoop-client-api-").removesuffix(".jar")
    raise RuntimeError("pyspark ships no hadoop-client-api JAR: cannot tell which hadoop-aws matches its Hadoop")


def hadoop_aws_coordinate() -> str:
    """Hadoop's S3 connector for the bundled Hadoop, e.g. org.apache.hadoop:hadoop-aws:3.5.0 (it brings the AWS SDK bundle)."""
    return f"org.apache.hadoop:hadoop-aws:{bundled_hadoop_version()}"


def spark_packages(object_store: bool = False) -> list[str]:
    """The Maven coordinates a session needs: Delta's, and the S3 connector's for an object-store data root."""
    return [delta_maven_coordinate(), *([hadoop_aws_coordinate()] if object_store else [])]


def cached_jars(packages: list[str], cache_dir: Path | None = None) -> list[str]:
    """The cached JARs for these packages, or [] when they have not been resolved together yet."""
    cache = (cache_dir or settings.jars_cache_dir()) / _packages_folder(packages)
    marker = cache / "COMPLETE"
    if not marker.exists():
        return []
    return sorted(str(p) for p in cache.glob("*.jar"))


def cached_delta_jars(cache_dir: Path | None = None) -> list[str]:
    """The cached JARs for this Delta version, or [] when they have not been resolved yet."""
    return cached_jars(spark_packages(), cache_dir)


def _packages_folder(packages: list[str]) -> str:
    # Delta alone keeps the folder it always had (`io.delta_delta-spark_4.2_2.13_4.4.0`).
    return "+".join(p.replace(":", "_") for p in packages)


def _artifact_name(jar_file_name: str) -> str:
    """`org.apache.parquet_parquet-column-1.16.0.jar` -> `parquet-column`."""
    stem = jar_file_name.removesuffix(".jar").split("_", 1)[-1]
    return re.sub(r"-\d[\w.]*(-\d+)?$", "", stem)


def _remember_resolved_jars(resolved: list[Path], packages: list[str], cache_dir: Path) -> None:
    import pyspark

    # Ivy also resolves Hadoop, Parquet, log4j... that Spark already ships (in newer versions);
    # only the packages' own JARs are cached so the cached classpath never shadows Spark's.
    bundled = {_artifact_name("x_" + p.name) for p in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
    target = cache_dir / _packages_folder(packages)
    target.mkdir(parents=True, exist_ok=True)
    for jar in resolved:
        if _artifact_name(jar.name) in bundled:
            continue
        # A hard link where the file system allows: the AWS SDK bundle alone is about 700 MB.
        (target / jar.name).unlink(missing_ok=True)
        try:
            os.link(jar, target / jar.name)
        except OSError:
            shutil.copy2(jar, target / jar.name)
    (target / "COMPLETE").write_text(",".join(packages) + "\n")


def _resolved_jar_files(session: SparkSession) -> list[Path]:
    """The JARs Ivy resolved for this session's `spark.jars.packages` (Spark lists them in `spark.jars`)."""
    listed = session.sparkContext.getConf().get("spark.jars", "")
    return [Path(uri.removeprefix("file://").removeprefix("file:")) for uri in listed.split(",") if uri.endswith(".jar")]


def s3a_conf() -> dict[str, str]:
    """Spark settings for an S3 or S3-compatible store, from the `FS_S3_*` settings.

    Credentials are not among them: the connector's default chain reads `AWS_ACCESS_KEY_ID`,
    `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`) from the environment, or an instance role,
    so no secret lands in the Spark configuration a run logs."""
    conf = {"spark.hadoop.fs.s3a.endpoint.region": settings.s3_region()}
    endpoint = settings.s3_endpoint()
    if endpoint:
        conf["spark.hadoop.fs.s3a.endpoint"] = endpoint
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(not endpoint.startswith("http://")).lower()
    conf["spark.hadoop.fs.s3a.path.style.access"] = str(settings.s3_path_style()).lower()
    return conf


def delta_spark_conf(
    master: str | None = None, shuffle_partitions: int = 4, driver_memory: str = "4g", object_store: bool | None = None
) -> dict[str, str]:
    """The Spark configuration this project runs with; `spark.jars` points at the JAR cache when filled.

    `object_store` adds the S3 connector and its settings (`s3a_conf`); unset, it follows the data
    root (`FS_DATA_ROOT=s3a://...`). The connector must be on the classpath when the session starts."""
    if object_store is None:
        object_store = settings.data_root_is_s3()
    conf = {
        "spark.master": master or settings.spark_master(),
        "spark.app.name": "device-feature-store",
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
        # 200 shuffle partitions made a 1,000-device day 40 % slower than 4 on 2 cores.
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        # Rebuilding a Delta table's state from its log (on every read, write or `detail` of a new
        # version) ran as 50 tasks, Delta's default, whatever the log's size: about 100 tasks of
        # fixed cost per commit on 2 cores. The same count as the shuffles.
        "spark.databricks.delta.snapshotPartitions": str(shuffle_partitions),
        # VACUUM lists a table's files as this many tasks (Spark's default is 10,000, whatever the
        # table's size): 38 s per VACUUM of a table of a few files on 2 cores, most of the weekly
        # maintenance run. 64 tasks still list a year of day partitions in parallel.
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": "64",
        # PySpark records the Python call site of every Column it builds, for error messages: five
        # JVM calls and a walk of the Python stack each time, about 2 ms per `F.col(...) > 1`. A
        # small clean run builds some 650 columns (measured: 14,000 py4j calls, 3,200 of them this).
        # Our errors name the asset, day and file themselves.
        "spark.python.sql.dataFrameDebugging.enabled": "false",
        # About 60 aggregates in one groupBy silently lose generated code below this.
        "spark.sql.codegen.maxFields": "1000",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # A Python worker that dies (the feature kernels run in them) leaves its Python traceback in
        # the run's error instead of only "Python worker exited unexpectedly (crashed)".
        "spark.python.worker.faulthandler.enabled": "true",
        "spark.sql.execution.pyspark.udf.faulthandler.enabled": "true",
        # Larger Arrow batches into the feature kernels: fewer, bigger numpy passes.
        "spark.sql.execution.arrow.maxRecordsPerBatch": "100000",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.driver.memory": driver_memory,
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.host": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        "spark.databricks.delta.retentionDurationCheck.enabled": "true",
        # Every new table keeps its log and removed files as long as VACUUM's retention (90 days),
        # so time travel (`as_of`) reaches as far back as the guide promises; Delta's defaults are
        # 30 and 7 days. The maintenance job sets the same on tables created before.
        "spark.databricks.delta.properties.defaults.logRetentionDuration": f"interval {HISTORY_RETENTION_DAYS} days",
        "spark.databricks.delta.properties.defaults.deletedFileRetentionDuration": f"interval {HISTORY_RETENTION_DAYS} days",
    }
    archive = class_archive_path()
    if archive is not None and archive.exists():
        conf["spark.driver.extraJavaOptions"] += f" -XX:SharedArchiveFile={archive}"
    if object_store:
        conf.update(s3a_conf())
    packages = spark_packages(object_store)
    jars = cached_jars(packages)
    if jars:
        conf["spark.jars"] = ",".join(jars)
    else:
        ivy_dir = settings.jars_cache_dir() / "ivy"
        conf["spark.jars.packages"] = ",".join(packages)
        conf["spark.jars.ivy"] = str(ivy_dir)
    return conf


def _java() -> str | None:
    return shutil.which("java", path=os.environ.get("JAVA_HOME", "") + "/bin:" + os.environ.get("PATH", ""))


def class_archive_path(cache_dir: Path | None = None) -> Path | None:
    """Where the driver's class archive for this Java installation and this Spark lives (None without a `java`).

    An archive only maps into the JVM build that wrote it, with the class path it was written with
    (Spark's JARs, each checked by size and modification time): its name carries both, so a JDK
    update, a new pyspark or the same pyspark installed again (a virtualenv rebuilt in place) looks
    for a new one. Classes of the JARs Spark adds at start (Delta's) are taken from it only where
    their bytes match."""
    import pyspark

    java = _java()
    if java is None:
        return None
    jdk = Path(os.path.realpath(java)).parents[1]
    modules = jdk / "lib" / "modules"  # the JDK's class image: rewritten by any update of the JDK
    stamp = modules.stat() if modules.exists() else Path(os.path.realpath(java)).stat()
    spark_jars = Path(os.path.realpath(pyspark.__file__)).parent / "jars"
    install = hashlib.sha256(f"{jdk}|{spark_jars}".encode()).hexdigest()[:8]
    stamps = hashlib.sha256(f"{stamp.st_size}|{stamp.st_mtime_ns}".encode())
    for jar in sorted(spark_jars.glob("*.jar")):
        jar_stamp = jar.stat()
        stamps.update(f"|{jar.name}|{jar_stamp.st_size}|{jar_stamp.st_mtime_ns}".encode())
    folder = (cache_dir or settings.jars_cache_dir()) / "class-archives"
    return folder / f"spark-{pyspark.__version__}-{install}-{stamps.hexdigest()[:8]}.jsa"


def _stale_class_archives(archive: Path) -> list[Path]:
    """Archives written before for the same Java and the same place of Spark's JARs, whose files have
    changed since (a virtualenv rebuilt in place, a pyspark upgraded), and any under an earlier name:
    no JVM can map them any more."""
    install = archive.name.rsplit("-", 2)[1]
    same_install = [path for path in archive.parent.glob(f"spark-*-{install}-*.jsa") if path != archive]
    # Named `spark-<version>-<key>.jsa` by earlier releases: no driver looks for that name any more.
    earlier_naming = [path for path in archive.parent.glob("spark-*.jsa") if path.stem.count("-") == 2]
    return same_install + earlier_naming


def _class_archive_workload(session: SparkSession, folder: Path) -> None:
    """What a run's driver does, small: landing Parquet read, a Delta table written, merged into,
    read back with its change feed and history, grouped, windowed, and handed to pandas over Arrow."""
    from delta.tables import DeltaTable
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    landing, table = str(folder / "landing"), str(folder / "table")
    session.range(2000).selectExpr(
        "CAST(id % 20 AS STRING) AS device_id", "TIMESTAMP'2026-01-05 00:00:00' + make_interval(0, 0, 0, 0, 0, CAST(id AS INT)) AS ts",
        "CAST(id AS DOUBLE) / 7 AS value",
    ).write.parquet(landing)  # fmt: skip
    readings = session.read.parquet(landing).withColumn("reading_date", F.to_date("ts"))
    readings.write.format("delta").partitionBy("reading_date").option("delta.enableChangeDataFeed", "true").save(table)
    DeltaTable.forPath(session, table).alias("t").merge(
        readings.withColumn("value", F.col("value") + 1).alias("s"), "t.device_id = s.device_id AND t.ts = s.ts"
    ).whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()
    stored = session.read.format("delta").load(table)
    windows = stored.groupBy("device_id", F.window("ts", "15 minutes")).agg(F.avg("value"), F.stddev("value"), F.count("*"))
    windows.toPandas()
    ranked = stored.withColumn("n", F.row_number().over(Window.partitionBy("device_id").orderBy(F.desc("ts"))))
    ranked.where("n = 1").join(stored.select("device_id").distinct(), "device_id").collect()
    stored.groupBy("device_id").applyInPandas(lambda frame: frame.head(1), stored.schema).count()
    session.read.format("delta").option("readChangeFeed", "true").option("startingVersion", 1).load(table).count()
    DeltaTable.forPath(session, table).history(1).collect()


def write_class_archive(archive: Path) -> None:
    """Run the workload in a driver JVM of its own that writes the classes it loaded to `archive` as it exits."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(f".{archive.name}.{os.getpid()}")
    try:
        subprocess.run([sys.executable, "-m", "fs_resources.spark", "--dump-class-archive", str(partial)], check=True)
        if not partial.exists():
            raise RuntimeError(f"the JVM exited without writing its class archive {partial}")
        partial.replace(archive)  # whole or not at all: a run starting meanwhile maps the archive complete
        for stale in _stale_class_archives(archive):
            stale.unlink(missing_ok=True)  # about 200 MB each
    finally:
        partial.unlink(missing_ok=True)


def _dump_class_archive(path: Path) -> None:
    conf = delta_spark_conf(master="local[1]", shuffle_partitions=2, driver_memory="1g")
    options = conf["spark.driver.extraJavaOptions"].split(" -XX:SharedArchiveFile=")[0]
    # Classes Java cannot archive (signed JARs, generated accessors) are skipped with a warning each.
    conf["spark.driver.extraJavaOptions"] = f"{options} -XX:ArchiveClassesAtExit={path} -Xlog:cds=off -Xlog:cds+dynamic=off"
    session = get_spark_session(conf)
    with tempfile.TemporaryDirectory() as folder:
        _class_archive_workload(session, Path(folder))
    jvm = session.sparkContext._gateway.proc  # the driver JVM pyspark launched, a child of this process
    session.stop()
    # The archive is written as the JVM exits normally; pyspark would kill it at interpreter exit.
    try:
        session._jvm.java.lang.System.exit(0)
    except Exception:  # noqa: BLE001 - the connection closes under the call
        pass
    try:
        jvm.wait(timeout=300)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the driver JVM (pid {jvm.pid}) did not exit within 300 s of writing its class archive") from None


def check_java() -> None:
    """Fail with a clear message when no Java >= 17 is on PATH (Spark needs one)."""
    java = _java()
    if java is None:
        raise RuntimeError(
            "Spark needs Java 17 or newer and no `java` was found on PATH: install a JDK 17 (apt-get install openjdk-17-jre-headless) or set JAVA_HOME."
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):
        major = int(match.group(2))
    if major < MIN_JAVA_MAJOR:
        raise RuntimeError(f"Spark needs Java {MIN_JAVA_MAJOR} or newer; {java} is Java {major}. Install a JDK 17 or set JAVA_HOME.")


def get_spark_session(conf: dict[str, str] | None = None) -> SparkSession:
    """The process's Delta-enabled Spark session, created on first use and shared after that."""
    from pyspark.sql import SparkSession

    with _LOCK:
        active = SparkSession.getActiveSession()
        if active is not None:
            return active
        # Workers must run this interpreter, or they start a Python without our packages.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        check_java()
        conf = dict(conf or delta_spark_conf())
        builder = SparkSession.builder
        for key, value in conf.items():
            builder = builder.config(key, value)
        session = builder.getOrCreate()
        session.sparkContext.setLogLevel("ERROR")
        if "spark.jars.packages" in conf:
            _remember_resolved_jars(_resolved_jar_files(session), conf["spark.jars.packages"].split(","), settings.jars_cache_dir())
        return session


def jvm_class(jvm, name: str):
    """A JVM class by its full name, in one py4j lookup: `jvm.org.apache.hadoop.fs.Path` asks the
    JVM for `org`, then `org.apache`, ... and each part that is not a class is a failed class lookup
    through every import of the gateway (about 0.8 ms each, against 0.1 ms for the whole name)."""
    return getattr(jvm, name)


@contextmanager
def file_splits_for(session: SparkSession, bytes_per_row: float, rows_per_split: int = 500_000):
    """Split input files into about `rows_per_split` rows per task while the block runs.

    Landing Parquet compresses a reading to a few bytes, so Spark's 128 MB splits would hand one
    task millions of rows, and caching the staged rows of such a task ran a 4 GB driver out of
    heap at 10,000 devices. Splits are cut at Parquet row groups, so a task holds at least one."""
    wanted = max(1 << 20, int(bytes_per_row * rows_per_split))
    keys = ("spark.sql.files.maxPartitionBytes", "spark.sql.files.openCostInBytes")
    before = {k: session.conf.get(k) for k in keys}
    for k in keys:
        session.conf.set(k, str(wanted))
    try:
        yield wanted
    finally:
        for k, v in before.items():
            session.conf.set(k, v)


@contextmanager
def shuffle_partitions_for(session: SparkSession, rows: int, rows_per_partition: int = 500_000):
    """Raise `spark.sql.shuffle.partitions` for a large input while the block runs.

    Four partitions suit a day of a few hundred devices on 2 cores; at 10,000 devices (14.4 M
    readings) four partitions of wide staged rows ran the 4 GB local driver out of heap in the
    de-duplication window. Past `rows_per_partition` rows a partition, the count grows with the
    input; adaptive execution still coalesces what turns out small.
    """
    current = int(session.conf.get("spark.sql.shuffle.partitions"))
    wanted = max(current, -(-rows // rows_per_partition))
    session.conf.set("spark.sql.shuffle.partitions", str(wanted))
    try:
        yield wanted
    finally:
        session.conf.set("spark.sql.shuffle.partitions", str(current))


@contextmanager
def cache_uncompressed_up_to(session: SparkSession, rows: int, max_rows: int = 20_000_000):
    """Cache DataFrames without Spark's columnar compression while the block runs, for an input of
    at most `max_rows` rows.

    Compressing a cached batch tries every encoding on every column: caching a 10,000-device day of
    judged readings (14 M rows) took about 2 s longer compressed than not, of a 55 s cleaning step.
    Past `max_rows` the saving is what keeps the cache in the heap, and compression stays on."""
    key = "spark.sql.inMemoryColumnarStorage.compressed"
    before = session.conf.get(key)
    if rows <= max_rows:
        session.conf.set(key, "false")
    try:
        yield rows <= max_rows
    finally:
        session.conf.set(key, before)


class DeltaSparkResource(PySparkResource):
    """Spark session with Delta Lake; master from `FS_SPARK_MASTER` unless set here."""

    spark_config: dict[str, Any] = Field(default_factory=dict, description="Extra Spark settings, applied over the defaults.")
    master: str | None = Field(default=None, description="Spark master URL; unset reads FS_SPARK_MASTER, else local[*].")
    shuffle_partitions: int = Field(default=4, description="spark.sql.shuffle.partitions; 4 suits 2 cores.")
    driver_memory: str | None = Field(
        default=None, description="spark.driver.memory (all of Spark's heap in local mode); unset reads FS_SPARK_DRIVER_MEMORY, else 4g."
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        settings.secure_local_folders()
        self._spark_session = get_spark_session(self.session_conf())

    def session_conf(self) -> dict[str, str]:
        memory = self.driver_memory or os.environ.get("FS_SPARK_DRIVER_MEMORY") or "4g"
        conf = delta_spark_conf(self.master, self.shuffle_partitions, memory)
        conf.update(settings.spark_conf_overrides())
        conf.update({k: str(v) for k, v in self.spark_config.items()})
        return conf

    @property
    def spark_session(self) -> SparkSession:
        # Outside a run (a notebook, a test, a benchmark) the session starts on first use.
        if self._spark_session is None:
            self._spark_session = get_spark_session(self.session_conf())
        return self._spark_session


def main(argv: list[str] | None = None) -> int:
    """`python -m fs_resources.spark [--s3]`: check Java, resolve the Delta JARs (and, for an
    `s3a://` data root or with `--s3`, the S3 connector's) into the cache once, and write the
    driver's class archive once."""
    parser = argparse.ArgumentParser(prog="python -m fs_resources.spark", description=main.__doc__)
    parser.add_argument("--s3", action="store_true", help="also resolve the S3 connector's JARs")
    parser.add_argument("--dump-class-archive", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    check_java()
    if args.dump_class_archive:
        _dump_class_archive(args.dump_class_archive)
        return 0
    object_store = args.s3 or settings.data_root_is_s3()
    packages = ", ".join(spark_packages(object_store))
    if cached_jars(spark_packages(object_store)):
        print(f"JARs cached in {settings.jars_cache_dir()} ({packages})")
    else:
        print(f"resolving {packages} from Maven Central (first start only)...", flush=True)
        session = get_spark_session(delta_spark_conf(object_store=object_store))
        session.range(1).count()
        session.stop()
        print(f"JARs cached in {settings.jars_cache_dir()}")
    archive = class_archive_path()
    if archive is not None and not archive.exists():
        print("writing the Spark driver's class archive (first start only, about a minute)...", flush=True)
        try:
            write_class_archive(archive)
        except (subprocess.CalledProcessError, RuntimeError) as error:
            # Only a faster start is lost: every run still starts, loading its classes from the JARs.
            print(f"WARNING: no class archive written ({error}); Spark drivers start without one", file=sys.stderr)
            return 0
    print(f"class archive: {archive}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
