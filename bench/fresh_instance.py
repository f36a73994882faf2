"""A fresh data root and Dagster instance, and the processes a benchmark runs on them as `make run` would.

The embedded Redis, `dagster-daemon` on the code location (every sensor and schedule at its default,
the instance settings of `dagster_home/dagster.yaml`) and `fs-sim` each start in a session of their
own, logging to `logs/<name>.log` under the work folder, and are stopped by process group: SIGTERM,
then SIGKILL if the group is still there a minute later. The daemon's group holds its code server
and the runs it launched (their Spark JVMs included), so stopping it stops them. Leaving the `with`
block stops everything that was started, whether it ends normally, by an error, by Ctrl-C, or by a
SIGTERM or SIGHUP to the benchmark (taken as Ctrl-C).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STOP_TIMEOUT_SECONDS = 60


class FreshInstance:
    """`root` (FS_DATA_ROOT), `home` (DAGSTER_HOME) and `logs` under a new folder of `work_dir`."""

    def __init__(self, prefix: str, work_dir: str | None = None):
        self.work = Path(tempfile.mkdtemp(prefix=prefix, dir=work_dir))
        self.root, self.home, self.logs = self.work / "data", self.work / "dagster_home", self.work / "logs"
        self.root.mkdir(mode=0o700)
        self.home.mkdir(mode=0o700)
        self.logs.mkdir()
        shutil.copy(ROOT / "dagster_home" / "dagster.yaml", self.home / "dagster.yaml")
        # This process reads the same instance and data root (run records, tables) as its children.
        os.environ |= {"FS_DATA_ROOT": str(self.root), "DAGSTER_HOME": str(self.home)}
        self.env = dict(os.environ)
        self.procs: dict[str, subprocess.Popen] = {}
        # Every session started (one per process), for whoever sums their memory.
        self.sessions: set[int] = set()
        self._redis_started = False

    def __enter__(self) -> FreshInstance:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.default_int_handler)
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()

    def dagster_instance(self):
        """The instance, its SQLite storages created here: the daemon and its code server opening them
        at once, three processes creating them together, can leave two schema heads behind."""
        import dagster as dg

        return dg.DagsterInstance.get()

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def start(self, name: str, *cmd: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start `cmd` as process `name`, in a session of its own (its output appended to its log)."""
        out = open(self.log(name), "a")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env | (env or {}), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.procs[name] = proc
        self.sessions.add(proc.pid)
        return proc

    def start_daemon(self, env: dict[str, str] | None = None) -> subprocess.Popen:
        return self.start("daemon", str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml"), env=env)

    def start_simulator(self, *args: str) -> subprocess.Popen:
        return self.start("simulator", str(BIN / "fs-sim"), "live", *args)

    def running(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def exited(self) -> dict[str, int]:
        """Processes started and not stopped that have ended, with their exit codes."""
        return {name: proc.returncode for name, proc in self.procs.items() if proc.poll() is not None}

    def stop(self, name: str) -> None:
        """Stop process `name` and everything in its process group."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        try:
            # Whatever of the group outlived its leader (a run, a JVM) goes too.
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def redis(self, action: str) -> None:
        """`start` or `stop` the embedded Redis of this data root."""
        subprocess.run([str(BIN / "python"), "-m", "fs_resources.embedded_redis", action], cwd=ROOT, env=self.env, check=action == "start")
        self._redis_started = action == "start" or self._redis_started

    def stop_all(self) -> None:
        """Stop every process still started, the last started first, then Redis."""
        # A second Ctrl-C while stopping would leave the rest running: it is held until all are stopped.
        held = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            for name in reversed(list(self.procs)):
                self.stop(name)
            if self._redis_started:
                self.redis("stop")
        finally:
            for sig, handler in held.items():
                signal.signal(sig, handler)

    def remove(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
