"""Where things live, read from the environment at call time (never at import time).

| variable | default | meaning |
|---|---|---|
| `FS_DATA_ROOT` | `./data` | Delta tables and the landing zone |
| `FS_SPARK_MASTER` | `local[*]` | Spark master URL |
| `REDIS_URL` | unset: an embedded Redis server under `FS_DATA_ROOT/redis` | online store |
| `FS_JARS_CACHE` | `~/.cache/device-feature-store/jars` | Delta Lake JARs, resolved from Maven Central once |
| `FS_SKAB_DIR` | `../shared/data/skab` | the SKAB real-sensor data set |
| `FS_BACKFILL_DAYS_PER_RUN` | `3` | a UI backfill of the daily assets runs as runs of at most this many days |
| `FS_S3_ENDPOINT` | unset: AWS S3 | an S3-compatible endpoint (`http://127.0.0.1:9000`); `http://` turns TLS off |
| `FS_S3_PATH_STYLE` | `true` with `FS_S3_ENDPOINT`, else `false` | bucket in the path, not the host name |
| `FS_S3_REGION` | `AWS_REGION`, else `us-east-1` | the bucket's region |

S3 credentials are AWS's own variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_SESSION_TOKEN`) or an instance role, read by the S3 connector itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fs_domain.contract import EXPECTED_GAPS_FOLDER

DEFAULT_DATA_ROOT = "./data"
DEFAULT_SPARK_MASTER = "local[*]"
DEFAULT_SKAB_DIR = "../shared/data/skab"


def data_root() -> str:
    """The root of the landing zone and the Delta tables (a local path or any Hadoop URI)."""
    root = os.environ.get("FS_DATA_ROOT") or DEFAULT_DATA_ROOT
    if "://" in root:
        return root.rstrip("/")
    return str(Path(root).expanduser().resolve())


def data_root_is_s3() -> bool:
    """Whether the data root is on S3 (or an S3-compatible store), which needs Hadoop's S3 connector."""
    return data_root().startswith("s3a://")


def s3_endpoint() -> str | None:
    return os.environ.get("FS_S3_ENDPOINT") or None


def s3_path_style() -> bool:
    text = os.environ.get("FS_S3_PATH_STYLE", "").strip().lower()
    if not text:
        # Stores other than AWS (MinIO, Ceph, a local test endpoint) rarely resolve bucket host names.
        return s3_endpoint() is not None
    if text not in ("true", "false"):
        raise ValueError(f"FS_S3_PATH_STYLE must be true or false, not {text!r}")
    return text == "true"


def s3_region() -> str:
    return os.environ.get("FS_S3_REGION") or os.environ.get("AWS_REGION") or "us-east-1"


def landing_root(root: str | None = None) -> str:
    return f"{root or data_root()}/landing"


def tables_root(root: str | None = None) -> str:
    return f"{root or data_root()}/delta"


def archive_root() -> str:
    """The cold dataset retention moves expired days to (FS_ARCHIVE_ROOT, else FS_DATA_ROOT/archive):
    the same tables, under their own names, read for training when asked."""
    root = os.environ.get("FS_ARCHIVE_ROOT")
    if not root:
        return f"{data_root()}/archive"
    return root.rstrip("/") if "://" in root else str(Path(root).expanduser().resolve())


def registry_csv_path(root: str | None = None) -> str:
    return f"{landing_root(root)}/registry/devices.csv"


def maintenance_csv_path(root: str | None = None) -> str:
    return f"{landing_root(root)}/maintenance/events.csv"


def expected_gaps_csv_path(day: str, root: str | None = None) -> str:
    """The silences declared for UTC day `day` (YYYY-MM-DD); see `fs_domain.contract.EXPECTED_GAP_COLUMNS`."""
    return f"{landing_root(root)}/{EXPECTED_GAPS_FOLDER}/{day}.csv"


def spark_master() -> str:
    return os.environ.get("FS_SPARK_MASTER") or DEFAULT_SPARK_MASTER


def spark_conf_overrides() -> dict[str, str]:
    """Extra Spark settings from `FS_SPARK_CONF`, a JSON object (for example object-store
    credentials providers or endpoints), applied over the project's defaults."""
    text = os.environ.get("FS_SPARK_CONF", "").strip()
    if not text:
        return {}
    try:
        conf = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"FS_SPARK_CONF must be a JSON object of Spark settings, got {text[:80]!r}: {exc}") from exc
    if not isinstance(conf, dict) or not all(isinstance(k, str) and k.startswith("spark.") for k in conf):
        raise ValueError(f'FS_SPARK_CONF must be a JSON object whose keys are Spark settings ("spark.*"), got {text[:80]!r}')
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in conf.items()}


def jars_cache_dir() -> Path:
    default = Path.home() / ".cache" / "device-feature-store" / "jars"
    return Path(os.environ.get("FS_JARS_CACHE") or default).expanduser()


def skab_dir() -> Path:
    return Path(os.environ.get("FS_SKAB_DIR") or DEFAULT_SKAB_DIR).expanduser().resolve()


DEFAULT_BACKFILL_DAYS_PER_RUN = 3


def backfill_days_per_run() -> int:
    """How many days one backfill run of the daily assets holds (read when the code location loads).

    Three days of the design fleet is about 430 M readings: a run's memory and its re-work after a
    failure stay bounded, while the 10-20 s a run costs to start stays small beside its work."""
    value = int(os.environ.get("FS_BACKFILL_DAYS_PER_RUN") or DEFAULT_BACKFILL_DAYS_PER_RUN)
    if value < 1:
        raise ValueError(f"FS_BACKFILL_DAYS_PER_RUN must be at least 1, not {value}")
    return value


def private_folder(path: str | Path) -> Path | None:
    """Create a local folder readable by its owner only (0700), or tighten it; None for a URI root.

    The data root holds readings and the Redis password, `DAGSTER_HOME` run logs: neither is for
    other users of the machine."""
    if "://" in str(path) or str(path).startswith("file:"):
        return None
    folder = Path(path).expanduser()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if folder.stat().st_mode & 0o077 and folder.stat().st_uid == os.getuid():
        folder.chmod(0o700)
    return folder


def secure_local_folders() -> None:
    """The data root and the Dagster instance folder, private to their owner."""
    private_folder(data_root())
    if home := os.environ.get("DAGSTER_HOME"):
        private_folder(home)
