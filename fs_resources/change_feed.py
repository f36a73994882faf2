"""Whether a Delta table's change data feed can still be read from a version, decided from the
table's log before reading it, not from the error a read would raise.

The feed of commits `first`..`last` is made of each commit's entry in `_delta_log` and of the files
that entry names: the change files (`_change_data/`) the commit wrote or, for a commit that wrote
none, the data files it added and removed (Delta's rule for reading the feed). It is gone when
- the log no longer holds a commit of the range (log cleanup, after `delta.logRetentionDuration`),
- the feed was off for a commit of the range (`delta.enableChangeDataFeed` unset or false), or
- a file a commit of the range names was deleted (VACUUM deletes change files and removed data
  files once `delta.deletedFileRetentionDuration` has passed).
A version number also needs its table: a table deleted and written anew has another table id and
counts its versions from 0 again (`TableIdentity`).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote

from fs_resources.delta import DeltaTables
from fs_resources.spark import jvm_class

CHANGE_FEED_PROPERTY = "delta.enableChangeDataFeed"
_COMMIT_FILE = re.compile(r"(\d{20})\.json")


@dataclass(frozen=True)
class TableIdentity:
    """Which table a version number belongs to, and whether its change feed is on."""

    table_id: str
    created_at: datetime
    change_feed: bool


@dataclass(frozen=True)
class FeedRange:
    """What the log says of the feed of commits `first`..`last`: `gone` is why it cannot be read, or None."""

    first: int
    last: int
    oldest_commit: int | None  # the oldest commit the log still holds
    gone: str | None


def table_identity(delta: DeltaTables, table: str) -> TableIdentity:
    """The table's id (set when it is created), creation time and change feed setting, from its log."""
    row = delta.session.sql(f"DESCRIBE DETAIL delta.`{delta.path(table)}`").select("id", "createdAt", "properties").first()
    created = row["createdAt"]  # PySpark hands timestamps over as naive local times
    return TableIdentity(
        str(row["id"]),
        created.astimezone(UTC) if created is not None else datetime.fromtimestamp(0, UTC),
        (row["properties"] or {}).get(CHANGE_FEED_PROPERTY, "false").lower() == "true",
    )


class _TableFiles:
    """The table's folder through Hadoop's file system API, so a `file://` or `s3a://` root reads alike."""

    def __init__(self, delta: DeltaTables, table: str):
        session = delta.session
        self._jvm = session._jvm
        self._root = jvm_class(self._jvm, "org.apache.hadoop.fs.Path")(delta.path(table))
        self._fs = self._root.getFileSystem(session._jsparkSession.sessionState().newHadoopConf())

    def path(self, relative: str):
        return jvm_class(self._jvm, "org.apache.hadoop.fs.Path")(self._root, relative)

    def names(self, relative: str) -> set[str] | None:
        """The names in a folder of the table, or None when the folder is gone."""
        folder = self.path(relative) if relative else self._root
        if not self._fs.exists(folder):
            return None
        return {status.getPath().getName() for status in self._fs.listStatus(folder)}

    def text(self, relative: str) -> str:
        stream = self._fs.open(self.path(relative))
        try:
            return jvm_class(self._jvm, "org.apache.commons.io.IOUtils").toString(stream, "UTF-8")
        finally:
            stream.close()


def _files_read(actions: list[dict]) -> list[str]:
    """The files the feed of one commit is read from (paths relative to the table, as logged)."""
    changes = [a["cdc"]["path"] for a in actions if "cdc" in a]
    if changes:
        return changes
    return [a[kind]["path"] for a in actions for kind in ("add", "remove") if kind in a and a[kind].get("dataChange", True)]


def feed_range(delta: DeltaTables, table: str, first: int, last: int) -> FeedRange:
    """Whether the change feed of commits `first`..`last` can be read, and if not, why."""
    files = _TableFiles(delta, table)
    held = sorted(int(m.group(1)) for name in files.names("_delta_log") or () if (m := _COMMIT_FILE.fullmatch(name)))
    oldest = held[0] if held else None
    if first > last:
        return FeedRange(first, last, oldest, None)
    missing = sorted(set(range(first, last + 1)) - set(held))
    if missing:
        return FeedRange(
            first, last, oldest,
            f"the table's log no longer holds commit v{missing[0]} (it keeps v{oldest} onwards: log retention), "
            f"so its changes since v{first - 1} cannot be read",
        )  # fmt: skip
    wanted: list[tuple[int, str]] = []
    for version in range(first, last + 1):
        actions = [json.loads(line) for line in files.text(f"_delta_log/{version:020d}.json").splitlines() if line.strip()]
        for action in actions:
            if (
                "metaData" in action
                and (action["metaData"].get("configuration") or {}).get(CHANGE_FEED_PROPERTY, "false").lower() != "true"
            ):
                return FeedRange(first, last, oldest, f"the change feed is off from v{version} ({CHANGE_FEED_PROPERTY})")
        wanted += [(version, unquote(path)) for path in _files_read(actions)]
    by_folder: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for version, path in wanted:
        folder, _, name = path.rpartition("/")
        by_folder[folder].append((version, name))
    gone = []
    for folder, entries in by_folder.items():
        present = files.names(folder) or set()
        gone += [(version, f"{folder}/{name}" if folder else name) for version, name in entries if name not in present]
    if gone:
        version, path = min(gone)
        return FeedRange(
            first, last, oldest,
            f"{len(gone)} file(s) the change feed of v{first}..v{last} is read from are deleted (VACUUM), "
            f"the first of v{version}: {path}",
        )  # fmt: skip
    return FeedRange(first, last, oldest, None)
