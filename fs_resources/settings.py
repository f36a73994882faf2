"""Where things live, read from the environment at call time (never at import time).

| variable | default | meaning |
|---|---|---|
| `FS_DATA_ROOT` | `./data` | Delta tables and the landing zone |
| `FS_SPARK_MASTER` | `local[*]` | Spark master URL |
| `REDIS_URL` | unset: an embedded Redis server under `FS_DATA_ROOT/redis` | online store |
| `FS_JARS_CACHE` | `~/.cache/device-feature-store/jars` | Delta Lake JARs, resolved from Maven Central once |
| `FS_SKAB_DIR` | `../shared/data/skab` | the SKAB real-sensor data set |
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DATA_ROOT = "./data"
DEFAULT_SPARK_MASTER = "local[*]"
DEFAULT_SKAB_DIR = "../shared/data/skab"


def data_root() -> str:
    """The root of the landing zone and the Delta tables (a local path or any Hadoop URI)."""
    root = os.environ.get("FS_DATA_ROOT") or DEFAULT_DATA_ROOT
    if "://" in root:
        return root.rstrip("/")
    return str(Path(root).expanduser().resolve())


def landing_root(root: str | None = None) -> str:
    return f"{root or data_root()}/landing"


def tables_root(root: str | None = None) -> str:
    return f"{root or data_root()}/delta"


def registry_csv_path(root: str | None = None) -> str:
    return f"{landing_root(root)}/registry/devices.csv"


def maintenance_csv_path(root: str | None = None) -> str:
    return f"{landing_root(root)}/maintenance/events.csv"


def spark_master() -> str:
    return os.environ.get("FS_SPARK_MASTER") or DEFAULT_SPARK_MASTER


def jars_cache_dir() -> Path:
    default = Path.home() / ".cache" / "device-feature-store" / "jars"
    return Path(os.environ.get("FS_JARS_CACHE") or default).expanduser()


def skab_dir() -> Path:
    return Path(os.environ.get("FS_SKAB_DIR") or DEFAULT_SKAB_DIR).expanduser().resolve()
