"""The embedded Redis server: a real `redis-server` the project starts itself when `REDIS_URL` is unset.

The first user starts it on a free loopback port with its files under `FS_DATA_ROOT/redis` and
leaves it running for the other runs; `make run` stops it on exit
(`python -m fs_resources.embedded_redis stop`). It keeps its data in an append-only file and its
port across restarts, so readers find it where it was, with what it held; it requires a password
generated on first start and kept beside its data (mode 0600, folder 0700). A leaf module: it imports nothing of the project
but its settings. Passwords never leave it unredacted: what is logged or shown is `redact(url)`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

from fs_resources import settings


class RedisUnavailable(RuntimeError):
    pass


def redact(url: str) -> str:
    """The URL with any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedRedis:
    """A real `redis-server` bound to 127.0.0.1, its pid, port and log under `directory`."""

    def __init__(self, directory: Path | None = None, password: str | None = None, persistent: bool = True, fsync: str = "everysec"):
        self.directory = Path(directory or Path(settings.data_root()) / "redis")
        # Unset: the password stored beside the data, generated on the first start.
        self._password = password
        # An append-only file keeps the online store across a restart (an empty store would answer
        # "no entry" for every device until the next pre-hydration); `everysec` loses at most a
        # second of writes, which the next pre-hydration rewrites anyway.
        self.persistent = persistent
        self.fsync = fsync

    @property
    def password_file(self) -> Path:
        return self.directory / "redis.password"

    @property
    def password(self) -> str | None:
        if self._password is None and self.password_file.exists():
            self._password = self.password_file.read_text().strip()
        return self._password

    def _ensure_password(self) -> str:
        if self.password is None:
            self.password_file.touch(mode=0o600)
            self.password_file.write_text(secrets.token_urlsafe(24))
            self._password = None
        return self.password  # type: ignore[return-value]

    @property
    def port_file(self) -> Path:
        return self.directory / "redis.port"

    @property
    def pid_file(self) -> Path:
        return self.directory / "redis.pid"

    def url(self) -> str | None:
        if not self.port_file.exists():
            return None
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port_file.read_text().strip()}/0"

    def is_running(self) -> bool:
        url = self.url()
        if url is None:
            return False
        try:
            return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5).ping())
        except (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError):
            return False

    def start(self, port: int | None = None, timeout: float = 10.0) -> str:
        if self.is_running():
            return self.url()  # type: ignore[return-value]
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisUnavailable(
                "redis-server is not installed and REDIS_URL is unset. `make setup` installs it "
                "(Debian: apt-get install redis-server), or point REDIS_URL at a Redis server."
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        password = self._ensure_password()
        port = port or self._saved_port() or _free_port()
        args = [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--daemonize",
            "yes",
            "--pidfile",
            str(self.pid_file.resolve()),
            "--logfile",
            str((self.directory / "redis.log").resolve()),
            "--dir",
            str(self.directory.resolve()),
            "--save",
            "",
        ]
        args += ["--appendonly", "yes", "--appendfsync", self.fsync] if self.persistent else ["--appendonly", "no"]
        if password:
            # From a file only the owner reads, not the command line every `ps` shows.
            config = self.directory / "redis.conf"
            config.touch(mode=0o600)
            config.write_text(f"requirepass {password}\n")
            args.insert(1, str(config.resolve()))
        subprocess.run(args, check=True, capture_output=True)
        self.port_file.write_text(str(port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_running():
                return self.url()  # type: ignore[return-value]
            time.sleep(0.05)
        raise RedisUnavailable(
            f"embedded redis-server did not answer on 127.0.0.1:{port} within {timeout:.0f} s; see {self.directory / 'redis.log'}"
        )

    def _saved_port(self) -> int | None:
        """The port of the last start, if nothing else took it since: readers find the server where it was."""
        try:
            port = int(self.port_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        with socket.socket() as s:
            # As redis-server binds: connections the old server closed (TIME_WAIT) do not hold the port.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return None
        return port

    def stop(self, timeout: float = 10.0) -> None:
        if self.pid_file.exists():
            try:
                pid = int(self.pid_file.read_text().strip())
                os.kill(pid, 15)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    os.kill(pid, 0)
                    time.sleep(0.05)
            except (ProcessLookupError, ValueError):
                pass
        # The port file stays: the next start takes the same port.


def main(argv: list[str] | None = None) -> int:
    """`python -m fs_resources.embedded_redis start|stop|url`: manage the embedded server (`start` shows the URL
    with its password redacted; `url` prints it whole, for REDIS_URL=$(...))."""
    command = (argv or sys.argv[1:] or ["url"])[0]
    server = EmbeddedRedis()
    if command == "start":
        print(redact(server.start()))
    elif command == "stop":
        server.stop()
    else:
        print(server.url() or "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
