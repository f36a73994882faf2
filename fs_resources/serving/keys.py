"""API keys of the feature server: several, from a file and the environment, revocable without a restart.

The file (`FS_SERVE_API_KEYS_FILE`) holds one key a line (blank lines and `#` comments skipped; a
line `name key` names the key for the operator); `FS_SERVE_API_KEYS` holds comma-separated keys.
The file is read again when its size or modification time changes (looked at most once a second),
so a key deleted from it stops working within a second. Only SHA-256 digests are kept in memory.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

KEYS_SETTING = "FS_SERVE_API_KEYS"
KEYS_FILE_SETTING = "FS_SERVE_API_KEYS_FILE"
RECHECK_SECONDS = 1.0


class ApiKeySettingsError(ValueError):
    """The key settings cannot be used (a file named but unreadable)."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _keys_of(text: str) -> list[str]:
    keys = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            keys.append(line.split()[-1])
    return keys


@dataclass
class ApiKeys:
    """The accepted keys: `accepts(key)`; `configured` is False when neither setting names any."""

    inline: tuple[str, ...] = ()
    path: Path | None = None
    _digests: frozenset[bytes] = frozenset()
    _stamp: tuple[int, int] | None = None
    _checked: float = field(default=-1e9)

    @classmethod
    def from_environment(cls, env: dict[str, str] | None = None) -> ApiKeys:
        env = os.environ if env is None else env
        inline = tuple(k.strip() for k in env.get(KEYS_SETTING, "").split(",") if k.strip())
        path = Path(env[KEYS_FILE_SETTING]).expanduser() if env.get(KEYS_FILE_SETTING) else None
        keys = cls(inline, path)
        keys.reload(force=True)
        return keys

    @property
    def configured(self) -> bool:
        return bool(self.inline) or self.path is not None

    def reload(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < RECHECK_SECONDS:
            return
        self._checked = now
        from_file: list[str] = []
        if self.path is not None:
            try:
                stat = self.path.stat()
            except OSError as exc:
                if force:
                    raise ApiKeySettingsError(f"{KEYS_FILE_SETTING}={self.path}: {exc.strerror or exc}") from exc
                self._digests, self._stamp = frozenset(map(_digest, self.inline)), None  # the file gone: its keys with it
                return
            stamp = (stat.st_size, stat.st_mtime_ns)
            if stamp == self._stamp and not force:
                return
            from_file = _keys_of(self.path.read_text())
            self._stamp = stamp
        self._digests = frozenset(map(_digest, [*self.inline, *from_file]))

    def accepts(self, key: str | None) -> bool:
        self.reload()
        return key is not None and _digest(key) in self._digests
