"""An S3-compatible endpoint on 127.0.0.1 for tests: moto's server, in its own process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from fs_resources.spark_cluster import _free_port
from tests.conftest import wait_until

# Moto accepts any key pair; the S3 connector and boto3 both read these from the environment.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "feature-store-test", "AWS_SECRET_ACCESS_KEY": "feature-store-test-secret", "AWS_REGION": "us-east-1"}


class LocalS3:
    """`moto.server` on a free loopback port; its log next to the test session's other files."""

    def __init__(self, log: Path):
        self.log = log
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> str:
        with open(self.log, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **CREDENTIALS},
                start_new_session=True,
            )
        wait_until(self._answers, timeout, f"moto's S3 endpoint on {self.url} (log: {self.log})", interval=0.2)
        return self.url

    def _answers(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"moto's server exited with {self._process.returncode}: {self.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1):
                return True
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout)
