"""The Dagster UI as an operator's script sees it: a webserver and a daemon on 127.0.0.1, and the
GraphQL calls the UI itself makes (launch a partition backfill, watch it, pause automation).

Used by the end-to-end backfill test and by `docs/screenshots.py`; nothing in the code location
depends on it.

    with DagsterUI(dagster_home, env={"FS_DATA_ROOT": ...}) as ui:
        ui.pause_automation()            # sensors and schedules off, as an operator would do first
        ui.start_daemon()
        backfill = ui.launch_backfill(["device_features_1h"], ["2026-01-05", "2026-01-06"])
        ui.wait_for_backfill(backfill)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fs_resources.spark_cluster import _free_port, _wait_for_port

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCATION = "device_feature_store"
REPOSITORY = {"repositoryName": "__repository__", "repositoryLocationName": LOCATION}

LAUNCH_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
    ... on UnauthorizedError { message }
    ... on PartitionSetNotFoundError { message }
    ... on RunConflict { message }
    ... on ConflictingExecutionParamsError { message }
    ... on NoModeProvidedError { message }
    ... on InvalidSubsetError { message }
  }
}
"""

BACKFILL_STATUS = """
query BackfillStatus($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill {
      id status numPartitions
      error { message }
      runs(limit: 100) { runId status tags { key value } assetSelection { path } }
    }
    ... on PythonError { message }
  }
}
"""

RUN_STEPS = """
query RunSteps($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status stepStats { stepKey status startTime endTime } }
  }
}
"""

INSTIGATORS = """
query Instigators($repositorySelector: RepositorySelector!) {
  sensorsOrError(repositorySelector: $repositorySelector) {
    __typename
    ... on Sensors { results { id name sensorState { status } } }
  }
  schedulesOrError(repositorySelector: $repositorySelector) {
    __typename
    ... on Schedules { results { id name scheduleState { status } } }
  }
}
"""

STOP_SENSOR = "mutation StopSensor($id: String!) { stopSensor(id: $id) { __typename ... on PythonError { message } } }"
STOP_SCHEDULE = "mutation StopSchedule($id: String!) { stopRunningSchedule(id: $id) { __typename ... on PythonError { message } } }"
LOCATION_STATUS = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"

FINISHED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


class DagsterUIError(RuntimeError):
    """The webserver or daemon could not be started, or answered a GraphQL call with an error."""


class DagsterUI:
    """A real `dagster-webserver` (and, once started, `dagster-daemon`) for one DAGSTER_HOME."""

    def __init__(self, dagster_home: Path, env: dict[str, str] | None = None, port: int | None = None, log_dir: Path | None = None):
        self.home = Path(dagster_home)
        self.port = port or _free_port()
        self.env = dict(os.environ, DAGSTER_HOME=str(self.home), **(env or {}))
        self.log_dir = Path(log_dir or self.home / "logs")
        self.processes: dict[str, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> DagsterUI:
        self.start_webserver()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, name: str, args: Sequence[str]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")
        binary = str(Path(sys.executable).parent / args[0])
        self.processes[name] = subprocess.Popen(
            [binary, *args[1:]], cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def start_webserver(self, timeout: float = 180) -> None:
        """Start the webserver and wait until the code location has loaded."""
        self._spawn("webserver", ["dagster-webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(self.port)])
        if not _wait_for_port(self.port, timeout):
            raise DagsterUIError(f"the webserver did not listen on {self.url} within {timeout:.0f} s:\n{self.log_tail('webserver')}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entries = self.graphql(LOCATION_STATUS)["workspaceOrError"]["locationEntries"]
            entry = next((e for e in entries if e["name"] == LOCATION), None)
            if entry and entry["loadStatus"] == "LOADED":
                loaded = entry["locationOrLoadError"]
                if loaded["__typename"] == "PythonError":
                    raise DagsterUIError(f"the code location failed to load: {loaded['message']}")
                return
            time.sleep(1)
        raise DagsterUIError(f"the code location did not load within {timeout:.0f} s:\n{self.log_tail('webserver')}")

    def start_daemon(self) -> None:
        """The daemon runs backfills, dequeues runs (pools, tag limits) and ticks sensors and schedules."""
        self._spawn("daemon", ["dagster-daemon", "run", "-w", "workspace.yaml"])

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        if answer.get("errors"):
            raise DagsterUIError(f"GraphQL errors: {answer['errors']}")
        return answer["data"]

    def pause_automation(self, keep: Sequence[str] = ()) -> list[str]:
        """Stop every running sensor and schedule but those named in `keep` (the UI's toggles); returns their names."""
        data = self.graphql(INSTIGATORS, {"repositorySelector": REPOSITORY})
        stopped = []
        for sensor in data["sensorsOrError"]["results"]:
            if sensor["sensorState"]["status"] == "RUNNING" and sensor["name"] not in keep:
                self._expect_ok(self.graphql(STOP_SENSOR, {"id": sensor["id"]})["stopSensor"], f"stopping {sensor['name']}")
                stopped.append(sensor["name"])
        for schedule in data["schedulesOrError"]["results"]:
            if schedule["scheduleState"]["status"] == "RUNNING" and schedule["name"] not in keep:
                self._expect_ok(self.graphql(STOP_SCHEDULE, {"id": schedule["id"]})["stopRunningSchedule"], f"stopping {schedule['name']}")
                stopped.append(schedule["name"])
        return stopped

    def launch_backfill(self, assets: Sequence[str], partitions: Sequence[str], title: str | None = None) -> str:
        """What *Materialize selected → Launch backfill* sends: the selected assets and the chosen partitions."""
        params = {
            "assetSelection": [{"path": [a]} for a in assets],
            "partitionNames": list(partitions),
            "fromFailure": False,
            "tags": [],
            "title": title,
        }
        result = self.graphql(LAUNCH_BACKFILL, {"backfillParams": params})["launchPartitionBackfill"]
        self._expect_ok(result, "launching the backfill", success="LaunchBackfillSuccess")
        return result["backfillId"]

    def backfill(self, backfill_id: str) -> dict[str, Any]:
        return self.graphql(BACKFILL_STATUS, {"backfillId": backfill_id})["partitionBackfillOrError"]

    def wait_for_backfill(self, backfill_id: str, timeout: float = 900, poll: float = 2) -> dict[str, Any]:
        """Poll the backfill until it has finished (and no run of it is still going); returns its last state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.backfill(backfill_id)
            if state["status"] in FINISHED and all(r["status"] in {"SUCCESS", "FAILURE", "CANCELED"} for r in state["runs"]):
                return state
            if "daemon" in self.processes and self.processes["daemon"].poll() is not None:
                raise DagsterUIError(f"the daemon exited while backfill {backfill_id} was running:\n{self.log_tail('daemon')}")
            time.sleep(poll)
        raise DagsterUIError(f"backfill {backfill_id} did not finish within {timeout:.0f} s; last state: {state}")

    def run_steps(self, run_id: str) -> list[dict[str, Any]]:
        return self.graphql(RUN_STEPS, {"runId": run_id})["runOrError"]["stepStats"]

    def daemon_exited(self) -> bool:
        return "daemon" in self.processes and self.processes["daemon"].poll() is not None

    @staticmethod
    def _expect_ok(result: dict[str, Any], doing: str, success: str | None = None) -> None:
        kind = result["__typename"]
        if (success and kind != success) or kind.endswith("Error") or kind in ("RunConflict", "PythonError"):
            raise DagsterUIError(f"{doing}: {kind}: {result.get('message') or result}")


def run_worker_pid(instance, run_id: str) -> int | None:
    """The pid a run executes in, from the engine event that announced its process (None until then)."""
    import dagster as dg

    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.event_specific_data if entry.dagster_event else None
        pid = (getattr(data, "metadata", None) or {}).get("pid")
        if pid is not None:
            return int(getattr(pid, "value", pid))
        if "(pid: " in (entry.user_message or ""):
            return int(entry.user_message.rsplit("(pid: ", 1)[1].split(")")[0])
    return None


def process_tree(pid: int) -> list[int]:
    """`pid` and every process descending from it: a run worker, its Spark JVM and Python workers.

    A daemon-launched run shares the process group of the code server that spawned it, so killing
    a run alone means killing its tree, not its group."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree
