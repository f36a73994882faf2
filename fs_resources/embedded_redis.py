"""The embedded Redis server: a real `redis-server` the project starts itself when `REDIS_URL` is unset.

The first user starts it on a free loopback port with its files under `FS_DATA_ROOT/redis` and
leaves it running for the other runs; `make run` stops it on exit
(`python -m fs_resources.embedded_redis stop`). It keeps its data in an append-only file and its
port across restarts, so readers find it where it was, with what it held; it requires a password
generated on first start and kept beside its data (mode 0600, folder 0700). A leaf module: it imports nothing of the project
but its settings. Passwords never leave it unredacted: what is logged or shown is `redact(url)`.

One server per data folder: two servers on one append-only file would each replay and append to
it. Whoever starts the server holds a lock on the folder (`redis.lock`, an fcntl lock the kernel
releases when its holder dies) from the moment it looks for a server until that server answers, so
two processes never both find none and start one each. A server that is reading its append-only
file back answers every command with LOADING: it is alive, so a starter waits for it to finish
instead of starting a second server beside it (`probe` tells loading from down).
"""

from __future__ import annotations

import argparse
import enum
import fcntl
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from fs_resources import settings

# A probe must see the server's first answer: redis-py's default retries wait out LOADING.
PROBE_TIMEOUT_SECONDS = 0.5


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


class Liveness(enum.Enum):
    """What a probe found of the folder's server."""

    UP = "up"  # answers commands
    LOADING = "loading"  # answers, but is still reading its append-only file back
    UNRESPONSIVE = "unresponsive"  # its process is there, but it does not answer (starting, stopping, blocked)
    DOWN = "down"  # no process, and nothing of ours answers on its port


def _process_serves(pid: int, directory: Path) -> bool:
    """Whether `pid` is a live redis-server working in `directory` (it changes into its --dir)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    if not Path("/proc/self/cwd").exists():  # no /proc (macOS): a live pid from the folder's pid file is taken as the server
        return True
    try:
        return Path(f"/proc/{pid}/cwd").resolve(strict=True) == directory.resolve()
    except OSError:
        return False


class EmbeddedRedis:
    """A real `redis-server` bound to 127.0.0.1, its pid, port and log under `directory`."""

    def __init__(
        self,
        directory: Path | None = None,
        password: str | None = None,
        persistent: bool = True,
        fsync: str = "everysec",
        config: Mapping[str, str] | None = None,
    ):
        self.directory = Path(directory or Path(settings.data_root()) / "redis")
        # Unset: the password stored beside the data, generated on the first start.
        self._password = password
        # An append-only file keeps the online store across a restart (an empty store would answer
        # "no entry" for every device until the next pre-hydration); `everysec` loses at most a
        # second of writes, which the next pre-hydration rewrites anyway.
        self.persistent = persistent
        self.fsync = fsync
        # Further redis.conf directives (`maxmemory`, say), written to its config file.
        self.config = dict(config or {})

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

    @property
    def lock_file(self) -> Path:
        return self.directory / "redis.lock"

    def probe(self) -> Liveness:
        """How the folder's server is: up, loading its data, there but not answering, or down."""
        url = self.url()
        if url is not None:
            client = redis.Redis.from_url(
                url, socket_connect_timeout=PROBE_TIMEOUT_SECONDS, socket_timeout=PROBE_TIMEOUT_SECONDS, retry=Retry(NoBackoff(), 0)
            )
            try:
                client.ping()
                return Liveness.UP
            except redis.BusyLoadingError:  # the server's LOADING error, told apart by its error code
                return Liveness.LOADING
            except redis.TimeoutError:  # connected, no answer: something listens and is busy
                return Liveness.UNRESPONSIVE
            except (redis.ConnectionError, redis.AuthenticationError, redis.ResponseError):
                pass  # refused, or another server took the port: ours may still be there, by its pid
            finally:
                client.close()
        pid = self._pid()
        return Liveness.UNRESPONSIVE if pid is not None and _process_serves(pid, self.directory) else Liveness.DOWN

    def is_running(self) -> bool:
        """Whether the folder's server is there, answering or loading: starting another would be a second one."""
        return self.probe() is not Liveness.DOWN

    @contextmanager
    def _folder_lock(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        with open(self.lock_file, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released on close, or by the kernel if this process dies
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def start(self, port: int | None = None, timeout: float = 10.0, loading_timeout: float = 300.0) -> str:
        """The server's URL once it answers, starting it when it is down; one server per folder.

        A server found loading (or there but not answering) is waited for, up to `loading_timeout`;
        one this call starts must answer within `timeout`, then finish loading within
        `loading_timeout`. Either way a server still loading is left running."""
        if self.probe() is Liveness.UP:
            return self.url()  # type: ignore[return-value]
        with self._folder_lock():
            begun = time.monotonic()
            launched_on: int | None = None
            while True:
                state = self.probe()
                if state is Liveness.UP:
                    return self.url()  # type: ignore[return-value]
                if state is Liveness.DOWN and launched_on is None:
                    launched_on, launched_at = self._launch(port), time.monotonic()
                    continue
                if launched_on is not None and state is not Liveness.LOADING and time.monotonic() - launched_at > timeout:
                    raise RedisUnavailable(
                        f"embedded redis-server did not answer on 127.0.0.1:{launched_on} within {timeout:.0f} s; "
                        f"see {self.directory / 'redis.log'}"
                    )
                if (state is Liveness.LOADING or launched_on is None) and time.monotonic() - begun > loading_timeout:
                    raise RedisUnavailable(
                        f"embedded redis-server under {self.directory} is {state.value} after {loading_timeout:.0f} s "
                        f"(reading its append-only file back, most likely); it is left running, try again later or see "
                        f"{self.directory / 'redis.log'}"
                    )
                time.sleep(0.05)

    def _launch(self, port: int | None) -> int:
        """Start redis-server (the folder's lock held) and record its port; the port."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisUnavailable(
                "redis-server is not installed and REDIS_URL is unset. `make setup` installs it "
                "(Debian: apt-get install redis-server), or point REDIS_URL at a Redis server."
            )
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
        lines = [f"requirepass {password}"] if password else []
        lines += [f"{key} {value}" for key, value in self.config.items()]
        if lines:
            # From a file only the owner reads, not the command line every `ps` shows.
            config = self.directory / "redis.conf"
            config.touch(mode=0o600)
            config.write_text("".join(f"{line}\n" for line in lines))
            args.insert(1, str(config.resolve()))
        subprocess.run(args, check=True, capture_output=True)
        if self._recorded_port() != port:
            # Replaced whole, so a reader never finds it empty.
            staged = self.port_file.with_suffix(".port.tmp")
            staged.write_text(str(port))
            staged.replace(self.port_file)
        return port

    def _recorded_port(self) -> int | None:
        try:
            return int(self.port_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _saved_port(self) -> int | None:
        """The port of the last start, if nothing else took it since: readers find the server where it was."""
        port = self._recorded_port()
        if port is None:
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
        pid = self._pid()
        # A pid file left by a killed server may name another process by now.
        if pid is not None and _process_serves(pid, self.directory):
            try:
                os.kill(pid, 15)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    os.kill(pid, 0)
                    time.sleep(0.05)
            except ProcessLookupError:
                pass
        # The port file stays: the next start takes the same port.


def main(argv: list[str] | None = None) -> int:
    """`python -m fs_resources.embedded_redis start|stop|url`: manage the embedded server (`start` shows the URL
    with its password redacted; `url` prints it whole, for REDIS_URL=$(...))."""
    parser = argparse.ArgumentParser(prog="python -m fs_resources.embedded_redis", description=main.__doc__)
    parser.add_argument("command", nargs="?", choices=("start", "stop", "url"), default="url")
    command = parser.parse_args(argv).command
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
