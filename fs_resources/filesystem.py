"""Listing and peeking at files through Spark's filesystem layer (Hadoop `FileSystem`).

The landing zone may be a local folder, a `file://` URI or an object store (`s3a://`, `abfss://`,
`gs://`): every one is listed and opened the same way, by the JVM Spark already runs, so what the
assets list is exactly what Spark can read. Sensors, which run without a Spark session, list a
local root directly; a remote root needs the session.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from pyspark.sql import SparkSession

from fs_resources.spark import jvm_class


@dataclass(frozen=True)
class FileStatus:
    path: str  # how the file is shown: a plain path under a local root, else the URI
    uri: str  # Hadoop's spelling (`file:/...`, `s3a://...`): what Spark's `_metadata.file_path` decodes to
    size: int
    mtime_ns: int
    is_dir: bool = False
    is_symlink: bool = False

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    @property
    def ingested_at(self) -> datetime:
        return datetime.fromtimestamp(self.mtime_ns / 1e9, tz=UTC)


class FileSystem(Protocol):
    def list(self, folder: str) -> list[FileStatus]:
        """The folder's entries, sorted by name; empty when the folder does not exist."""

    def first_line(self, path: str, limit: int) -> bytes:
        """The file's bytes up to its first newline, at most `limit` bytes."""

    def read_bytes(self, path: str) -> bytes | None:
        """A small file whole (a registry, an events list), or None when there is no such file."""

    def exists(self, path: str) -> bool:
        """Whether there is a file (or folder) at `path` now."""

    def byte_count(self, path: str) -> int:
        """Every byte of the file read through and counted, none kept: whether the storage hands the file over whole."""


def is_local(root: str) -> bool:
    return "://" not in root and not root.startswith("file:")


def _shown(uri: str, local_root: bool) -> str:
    return uri.removeprefix("file:") if local_root else uri


def _local(path: str) -> str:
    return path.removeprefix("file://").removeprefix("file:")


class LocalFileSystem:
    """A local folder, read with `os`; symbolic links are listed as such and never followed."""

    def list(self, folder: str) -> list[FileStatus]:
        try:
            entries = sorted(os.scandir(_local(folder)), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = []
        for entry in entries:
            try:
                stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            uri = "file:" + os.path.abspath(entry.path)
            found.append(
                FileStatus(
                    _shown(uri, is_local(folder)),
                    uri,
                    stat.st_size,
                    stat.st_mtime_ns // 1_000_000 * 1_000_000,  # milliseconds, as Hadoop's listing reports it
                    is_dir=entry.is_dir(follow_symlinks=False),
                    is_symlink=entry.is_symlink(),
                )
            )
        return found

    def first_line(self, path: str, limit: int) -> bytes:
        with open(_local(path), "rb") as handle:
            return handle.readline(limit)

    def read_bytes(self, path: str) -> bytes | None:
        try:
            with open(_local(path), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def exists(self, path: str) -> bool:
        return os.path.lexists(_local(path))

    def byte_count(self, path: str) -> int:
        count = 0
        with open(_local(path), "rb") as handle:
            while chunk := handle.read(1 << 20):
                count += len(chunk)
        return count


class HadoopFileSystem:
    """Any root Spark can read, through the session's Hadoop configuration."""

    def __init__(self, session: SparkSession):
        self._jvm = session._jvm
        self._conf = session._jsc.hadoopConfiguration()

    def _path(self, path: str):
        return jvm_class(self._jvm, "org.apache.hadoop.fs.Path")(path)

    def list(self, folder: str) -> list[FileStatus]:
        path = self._path(folder)
        fs = path.getFileSystem(self._conf)
        try:
            statuses = fs.listStatus(path)
        except Exception as exc:  # py4j wraps java.io.FileNotFoundException
            if "FileNotFoundException" in str(exc):
                return []
            raise
        local_root = is_local(folder)
        found = []
        for status in statuses:
            uri = status.getPath().toString()
            symlink = bool(status.isSymlink()) or (uri.startswith("file:") and os.path.islink(uri.removeprefix("file:")))
            found.append(
                FileStatus(
                    _shown(uri, local_root),
                    uri,
                    int(status.getLen()),
                    int(status.getModificationTime()) * 1_000_000,
                    is_dir=bool(status.isDirectory()),
                    is_symlink=symlink,
                )
            )
        return sorted(found, key=lambda f: f.name)

    def first_line(self, path: str, limit: int) -> bytes:
        jvm = self._jvm
        hadoop_path = self._path(path)
        stream = hadoop_path.getFileSystem(self._conf).open(hadoop_path)
        try:
            bounded = jvm.org.apache.commons.io.input.BoundedInputStream.builder().setInputStream(stream).setMaxCount(limit).get()
            data = bytes(jvm.org.apache.commons.io.IOUtils.toByteArray(bounded))
        finally:
            stream.close()
        cut = data.find(b"\n")
        return data if cut < 0 else data[: cut + 1]

    def read_bytes(self, path: str) -> bytes | None:
        hadoop_path = self._path(path)
        fs = hadoop_path.getFileSystem(self._conf)
        if not fs.exists(hadoop_path):
            return None
        stream = fs.open(hadoop_path)
        try:
            return bytes(jvm_class(self._jvm, "org.apache.commons.io.IOUtils").toByteArray(stream))
        finally:
            stream.close()

    def exists(self, path: str) -> bool:
        hadoop_path = self._path(path)
        return bool(hadoop_path.getFileSystem(self._conf).exists(hadoop_path))

    def byte_count(self, path: str) -> int:
        hadoop_path = self._path(path)
        stream = hadoop_path.getFileSystem(self._conf).open(hadoop_path)
        try:
            return int(jvm_class(self._jvm, "org.apache.commons.io.IOUtils").consume(stream))
        finally:
            stream.close()


def filesystem_for(root: str, session: SparkSession | None = None) -> FileSystem:
    """Spark's filesystem layer when a session is at hand or the root is remote; a local root without
    one (a sensor's tick) is listed directly rather than starting a JVM for it."""
    if session is not None:
        return HadoopFileSystem(session)
    if is_local(root) or root.startswith("file:"):
        return LocalFileSystem()
    from fs_resources.spark import get_spark_session

    return HadoopFileSystem(get_spark_session())
