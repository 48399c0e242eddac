"""Events a network output could not deliver before a stop, kept on disk for the next run (``spool_dir``).

One JSON Lines file per output (``webhook.jsonl``, ``mqtt.jsonl``). The next
run of that output reads it first and sends what it holds before anything
new. The file is rewritten only at a clean stop (with what is still unsent,
or removed when nothing is): a run killed before then leaves it as it was,
so its events are sent again by the run after, each with its id, which is
how a receiver tells a repeat (at least once, never silently lost).

Two runs must not share a spool folder at the same time.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import ConfigError

logger = logging.getLogger(__name__)


class FileSpool:
    def __init__(self, folder: Path, output: str, encode: Callable[[object], dict],
                 decode: Callable[[dict], object]) -> None:
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"outputs.{output}.spool_dir {folder}: cannot create it ({exc.strerror})") from exc
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(f"outputs.{output}.spool_dir {folder}: not writable by this user")
        self.path = folder / f"{output}.jsonl"
        self._encode = encode
        self._decode = decode

    def load(self) -> list:
        """What an earlier run left, oldest first; a line that cannot be read is named and skipped."""
        if not self.path.exists():
            return []
        records = []
        with self.path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    records.append(self._decode(json.loads(line)))
                except (ValueError, KeyError, TypeError) as exc:
                    logger.error("spool %s line %d is not an event (%s); skipped", self.path, number, exc)
        return records

    def save(self, records: list) -> None:
        """Replaces the spool with ``records`` (written beside it, then renamed: never half a file)."""
        if not records:
            self.path.unlink(missing_ok=True)
            return
        partial = self.path.with_name(self.path.name + ".partial")
        with partial.open("w", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(self._encode(record), separators=(",", ":")) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, self.path)
