"""The driver's class archive: written once by `python -m fs_resources.spark` (in `make setup`, which
the test command runs first) and mapped by every driver JVM the project's settings start."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fs_resources.spark import _stale_class_archives, class_archive_path, delta_spark_conf

ROOT = Path(__file__).resolve().parents[1]

# A driver as a run starts one, told to refuse to start without its archive (-Xshare:on) and to log
# where each class came from.
DRIVER = textwrap.dedent(
    """
    import sys
    from fs_resources.spark import delta_spark_conf, get_spark_session
    conf = delta_spark_conf(master="local[1]", driver_memory="1g")
    conf["spark.driver.extraJavaOptions"] += f" -Xshare:on -Xlog:class+load=info:file={sys.argv[1]}"
    session = get_spark_session(conf)
    session.range(3).write.format("delta").save(sys.argv[2])
    print(session.read.format("delta").load(sys.argv[2]).count())
    """
)


@pytest.mark.unit
def test_the_settings_name_the_archive_only_once_it_exists(tmp_path, monkeypatch):
    monkeypatch.setenv("FS_JARS_CACHE", str(tmp_path))
    archive = class_archive_path()
    assert archive is not None and archive.is_relative_to(tmp_path)
    assert "SharedArchiveFile" not in delta_spark_conf(master="local[1]")["spark.driver.extraJavaOptions"]
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"")
    assert f"-XX:SharedArchiveFile={archive}" in delta_spark_conf(master="local[1]")["spark.driver.extraJavaOptions"].split()


@pytest.mark.unit
def test_spark_installed_again_in_the_same_place_looks_for_a_new_archive_and_drops_the_old(tmp_path, monkeypatch):
    import pyspark

    # A virtualenv rebuilt in place: the same path to Spark's JARs, the files written again. The JVM
    # refuses an archive whose class path JARs changed, so the old name must not be used again.
    jars = tmp_path / "site-packages" / "pyspark" / "jars"
    jars.mkdir(parents=True)
    (jars / "spark-core.jar").write_bytes(b"PK")
    monkeypatch.setattr(pyspark, "__file__", str(jars.parent / "__init__.py"))
    monkeypatch.setenv("FS_JARS_CACHE", str(tmp_path / "cache"))
    before = class_archive_path()
    assert class_archive_path() == before
    os.utime(jars / "spark-core.jar", ns=(1, 1))
    after = class_archive_path()
    assert after != before and after.parent == before.parent
    after.parent.mkdir(parents=True)
    before.write_bytes(b"")
    other_install = after.parent / "spark-4.0.0-00000000-00000000.jsa"
    other_install.write_bytes(b"")
    earlier_name = after.parent / "spark-4.2.0-0c4fc48ba246.jsa"
    earlier_name.write_bytes(b"")
    assert sorted(_stale_class_archives(after)) == sorted([before, earlier_name])


@pytest.mark.e2e
def test_a_driver_started_with_the_project_settings_takes_spark_and_delta_classes_from_the_archive(tmp_path):
    archive = class_archive_path()
    assert archive is not None and archive.exists(), f"no class archive at {archive}: `make setup` writes it"
    log = tmp_path / "classes.log"
    out = subprocess.run(
        [sys.executable, "-c", DRIVER, str(log), str(tmp_path / "table")], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0 and out.stdout.split()[-1] == "3", out.stderr[-3000:]
    source = {}
    for line in log.read_text().splitlines():
        name, _, where = line.partition(" source: ")
        source[name.rsplit(" ", 1)[-1]] = where
    # Spark's own classes (the JVM's class path) and Delta's (the JARs Spark adds at start).
    for name in ("org.apache.spark.SparkContext", "org.apache.spark.sql.delta.DeltaLog"):
        assert source.get(name, "").startswith("shared objects file"), (name, source.get(name))
