"""A Spark standalone cluster on 127.0.0.1 (a master and N workers) from the installed pyspark.

The pip distribution has no `sbin/start-master.sh`; `bin/spark-class` runs the master and worker
classes directly. The code location needs nothing else to use it: `FS_SPARK_MASTER=spark://...`.

    python -m fs_resources.spark_cluster start [--workers 2]   # prints the master URL
    python -m fs_resources.spark_cluster stop
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from fs_resources import settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False


class StandaloneCluster:
    def __init__(self, directory: Path | None = None, workers: int = 2, cores_per_worker: int = 1, memory_per_worker: str = "2g"):
        self.directory = Path(directory or Path(settings.data_root()) / "spark-cluster")
        self.workers, self.cores, self.memory = workers, cores_per_worker, memory_per_worker

    @property
    def spark_class(self) -> Path:
        import pyspark

        return Path(pyspark.__file__).parent / "bin" / "spark-class"

    def _spawn(self, name: str, args: list[str]) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / f"{name}.log", "w")
        env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", SPARK_WORKER_DIR=str(self.directory / "work"), PYSPARK_PYTHON=sys.executable)
        process = subprocess.Popen([str(self.spark_class), *args], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        (self.directory / f"{name}.pid").write_text(str(process.pid))
        return process.pid

    def url(self) -> str | None:
        port_file = self.directory / "master.port"
        return f"spark://127.0.0.1:{port_file.read_text().strip()}" if port_file.exists() else None

    def start(self, timeout: float = 60.0) -> str:
        self.stop()
        port, ui = _free_port(), _free_port()
        self._spawn(
            "master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)]
        )
        if not _wait_for_port(port, timeout):
            raise RuntimeError(f"the Spark master did not listen on 127.0.0.1:{port}; see {self.directory / 'master.log'}")
        (self.directory / "master.port").write_text(str(port))
        url = f"spark://127.0.0.1:{port}"
        for i in range(self.workers):
            self._spawn(
                f"worker-{i}",
                [
                    "org.apache.spark.deploy.worker.Worker",
                    url,
                    "--host",
                    "127.0.0.1",
                    "--cores",
                    str(self.cores),
                    "--memory",
                    self.memory,
                    "--webui-port",
                    str(_free_port()),
                    "--work-dir",
                    str(self.directory / "work"),
                ],
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            registered = (self.directory / "master.log").read_text().count("Registering worker")
            if registered >= self.workers:
                return url
            time.sleep(0.5)
        raise RuntimeError(f"only {registered} of {self.workers} workers registered with {url}; see the logs in {self.directory}")

    def stop(self) -> None:
        for pid_file in sorted(self.directory.glob("*.pid")) if self.directory.exists() else []:
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGTERM)
            except (ProcessLookupError, ValueError, PermissionError):
                pass
            pid_file.unlink(missing_ok=True)
        (self.directory / "master.port").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A Spark standalone cluster on 127.0.0.1")
    parser.add_argument("command", choices=["start", "stop", "url"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory", default="2g", help="memory per worker")
    args = parser.parse_args(argv)
    cluster = StandaloneCluster(workers=args.workers, memory_per_worker=args.memory)
    if args.command == "start":
        print(cluster.start())
    elif args.command == "stop":
        cluster.stop()
    else:
        print(cluster.url() or "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
