"""What a failed read of a landing file means: a fault on the way to its bytes, or a verdict on them.

The way to the bytes can fail and recover: a storage or network error, a file briefly absent (an
object store's listing ahead of its reads, a producer replacing a file in two steps), a file still
being written. Such a read is retried with backoff; when the retries are spent the run fails and
nothing is recorded, so the next run reads the file again. The bytes themselves can be refused for
good: a bad footer or magic number, a page that does not decompress, a name Hadoop cannot open.
Only then is the file refused: one quarantine record names it, and the ledger marks it refused
(not cleaned), so it is read again once it changes.

The exception alone cannot tell the two apart: Parquet reports a page that does not decompress as
an `IOException`, and Spark 4.2's `ignoreCorruptFiles` ends a file's read early on any
`IOException`, `RuntimeException` or `InternalError` (only a missing file, `AccessControlException`
and `BlockMissingException` pass through), which is why the landing reader does not set it. So a
file is refused only when it is still there, the storage hands over every byte it was listed with,
and reading it fails the same way a second time; every other failure may pass.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from fs_domain.contract import Reason
from fs_resources.filesystem import FileStatus, FileSystem

T = TypeVar("T")
Log = Callable[[str], None]

# Spark's error conditions that name the file a read failed on (in the `path` parameter).
_FAILED_READ = "FAILED_READ_FILE"
_PATH_NOT_FOUND = "PATH_NOT_FOUND"


@dataclass(frozen=True)
class ReadPolicy:
    """How often, and how patiently, a failing read is tried before the run gives up."""

    attempts: int = 5
    backoff_seconds: float = 2.0  # doubles after each failed attempt
    max_backoff_seconds: float = 30.0

    def call(self, read: Callable[[], T], log: Log) -> T:
        """`read()`, tried again while it raises `TransientRead`; `Vanished` or `ReadStillFailing` once the attempts are spent."""

        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            pause = state.next_action.sleep if state.next_action else 0.0
            log(f"read failed, attempt {state.attempt_number} of {self.attempts} ({error}); trying again in {pause:.1f} s")

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientRead),
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=tenacity.wait_exponential(multiplier=self.backoff_seconds, max=self.max_backoff_seconds),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(read)
        except TransientRead as last:
            if last.vanished:
                raise Vanished(last.path, last.detail) from last
            raise ReadStillFailing(
                f"{last.path}: {last.detail}. Tried {self.attempts} times; the file is not judged on a fault that may pass, "
                "nothing was written, and the next run reads it again."
            ) from last


class TransientRead(Exception):
    """A read failed in a way that may pass: try again after a pause."""

    def __init__(self, path: str, detail: str, vanished: bool = False):
        super().__init__(f"{path}: {detail}")
        self.path, self.detail, self.vanished = path, detail, vanished


class ReadStillFailing(Exception):
    """A read kept failing in a way that may pass, through every attempt: the run fails."""


class Vanished(Exception):
    """A listed file stayed absent through every attempt: it is skipped, unrecorded, and read if it is listed again."""

    def __init__(self, path: str, detail: str):
        super().__init__(f"{path}: {detail}")
        self.path, self.detail = path, detail


@dataclass(frozen=True)
class Refusal:
    """A listed file that is not read: refused for good with a quarantine `reason`, or (reason None) vanished."""

    path: str
    reason: str | None
    detail: str


def java_chain(error: BaseException) -> list:
    """The Java exception behind a PySpark or py4j error, then its causes."""
    throwable = getattr(error, "java_exception", None) or getattr(error, "_origin", None)
    chain = []
    while throwable is not None and len(chain) < 20:
        chain.append(throwable)
        throwable = throwable.getCause()
    return chain


def _is_io_error(error: BaseException) -> bool:
    if isinstance(error, OSError):
        return True
    for throwable in java_chain(error):
        kind = throwable.getClass()
        while kind is not None:
            if kind.getName() == "java.io.IOException":
                return True
            kind = kind.getSuperclass()
    return False


def describe(error: BaseException) -> str:
    """The error and its causes, one `Class: message` each, for a quarantine record or a log line."""
    chain = java_chain(error)
    if not chain:
        return f"{type(error).__name__}: {error}"[:2000]
    parts: list[str] = []
    for throwable in chain:
        message = " ".join(str(throwable.getMessage() or "").split())
        part = f"{throwable.getClass().getSimpleName()}: {message}"
        if part not in parts:
            parts.append(part)
    return "; ".join(parts)[:2000]


def _root_cause(error: BaseException) -> str:
    chain = java_chain(error)
    return chain[-1].getClass().getName() if chain else type(error).__name__


def _condition(throwable) -> tuple[str, dict[str, str]] | None:
    try:
        condition = throwable.getCondition()
    except Exception:  # not a SparkThrowable: py4j finds no such method
        return None
    return (str(condition), dict(throwable.getMessageParameters())) if condition else None


def _same_path(uri: str) -> str:
    return "file:" + uri.removeprefix("file://") if uri.startswith("file:///") else uri


def named_file(error: BaseException, files: list[FileStatus]) -> FileStatus | None:
    """The listed file a Spark read failure names, if it names one of `files`."""
    by_uri = {_same_path(f.uri): f for f in files}
    for throwable in java_chain(error):
        found = _condition(throwable)
        if not found or "path" not in found[1]:
            continue
        condition, parameters = found
        path = parameters["path"]
        if condition.startswith(_FAILED_READ):
            # URL-encoded where Spark read the file (as `_metadata.file_path`), as listed where it read a footer
            spellings = [urllib.parse.unquote(path), path]
        elif condition.startswith(_PATH_NOT_FOUND):
            spellings = [re.sub(r"\\(.)", r"\1", path)]  # the path as given: glob characters escaped
        else:
            continue
        for uri in spellings:
            if file := by_uri.get(_same_path(uri)):
                return file
    return None


def judge(fs: FileSystem, f: FileStatus, error: BaseException, again: Callable[[], T]) -> T | Refusal:
    """After `error` reading `f`: raise `TransientRead` when the failure may pass; otherwise read
    `again` and return what it read (the failure passed after all) or, failing alike, the refusal."""
    try:
        present = fs.exists(f.uri)
    except Exception as exc:
        if _is_io_error(exc):
            raise TransientRead(f.path, f"the storage did not answer ({describe(exc)})") from exc
        raise
    if not present:
        raise TransientRead(f.path, "the file vanished after it was listed", vanished=True)
    try:
        count = fs.byte_count(f.uri)
    except Exception as exc:
        if _is_io_error(exc):
            raise TransientRead(f.path, f"the storage did not hand the file over ({describe(exc)})") from exc
        return Refusal(f.path, Reason.UNREADABLE_FILE, f"the file cannot be opened by its name ({describe(exc)})")
    if count != f.size:
        raise TransientRead(f.path, f"the file holds {count:,} bytes where {f.size:,} were listed: it is still changing")
    try:
        return again()
    except Exception as second:
        if _root_cause(second) != _root_cause(error):
            raise TransientRead(f.path, f"two reads failed differently ({describe(error)}; then {describe(second)})") from second
        return Refusal(f.path, Reason.UNREADABLE_FILE, describe(second))


def read_or_refuse(fs: FileSystem, f: FileStatus, read: Callable[[], T], policy: ReadPolicy, log: Log) -> T | Refusal:
    """One file's own read (a footer, a header line), retried while it may pass, or the file's refusal."""

    def once() -> T | Refusal:
        try:
            return read()
        except Exception as error:
            return judge(fs, f, error, read)

    try:
        return policy.call(once, log)
    except Vanished as gone:
        return Refusal(f.path, None, gone.detail)


def settle(
    read: Callable[[dict[str, Refusal]], T],
    files: list[FileStatus],
    fs: FileSystem,
    read_alone: Callable[[FileStatus], None],
    policy: ReadPolicy,
    log: Log,
) -> tuple[T, dict[str, Refusal]]:
    """`read(refused)` over many files (a Spark job), until it succeeds without the files refused on
    the way: a failure naming a file refuses that file, or is retried while it may pass."""
    refused: dict[str, Refusal] = {}

    def attempt() -> T:
        while True:
            try:
                return read(refused)
            except (TransientRead, ReadStillFailing, Vanished):
                raise
            except Exception as error:
                f = named_file(error, [f for f in files if f.path not in refused])
                if f is None:
                    raise
                outcome = judge(fs, f, error, lambda f=f: read_alone(f))
                if not isinstance(outcome, Refusal):
                    raise TransientRead(f.path, f"the read failed ({describe(error)}), then passed on its own") from error
                log(f"{f.path}: refused ({outcome.detail}); reading the other files again")
                refused[f.path] = outcome

    while True:
        try:
            return policy.call(attempt, log), refused
        except Vanished as gone:
            log(f"{gone.path}: {gone.detail}; skipped, it is read if it is listed again")
            refused[gone.path] = Refusal(gone.path, None, gone.detail)
