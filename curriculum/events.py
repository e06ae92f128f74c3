"""Structured logs: events.jsonl (one JSON object per line, for grep and tools) and the console.

Both go through structlog.  Every line of events.jsonl is written whole and flushed; a
transition is also fsynced.  Readers tolerate a torn last line (a kill mid-write), and resume
truncates the logs back to the offsets recorded with the checkpoint it restores, so a resumed
run never shows the same step twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator, TextIO

import structlog

from curriculum.state import _clean

_DURABLE = {"phase_transition", "phase_finished", "run_finished", "run_started", "checkpoint_saved"}


class _JsonLinesFile:
    """A structlog 'logger' that appends rendered lines to a log."""

    def __init__(self, log: "_AppendOnly"):
        self._log = log

    def msg(self, message: str) -> None:
        self._log._append(message + "\n")
        self._log._fh.flush()

    info = warning = error = debug = msg


def _json_safe(_, __, event_dict: dict[str, Any]) -> dict[str, Any]:
    return _clean(event_dict)


class _AppendOnly:
    """An append-only log file: its byte offset marks a checkpoint, with the sha256 of the bytes
    before it (kept as a running hash, so a checkpoint never rereads the log); close() makes it
    durable."""

    _fh: TextIO

    def _open(self, path: Path, enabled: bool) -> None:
        self._sha = hashlib.sha256()
        if enabled and path.exists():
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    self._sha.update(block)
        self._fh = open(path if enabled else os.devnull, "a", encoding="utf-8")

    def _append(self, line: str) -> None:
        self._fh.write(line)
        self._sha.update(line.encode("utf-8"))

    def offset(self) -> int:
        self._fh.flush()
        return self._fh.tell()

    def digest(self) -> str:
        """sha256 of the log's bytes up to offset()."""
        return self._sha.copy().hexdigest()

    def close(self) -> None:
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except (OSError, ValueError):
            pass
        self._fh.close()


class EventLog(_AppendOnly):
    """Writes events to RUN_DIR/events.jsonl and readable lines to the console."""

    def __init__(
        self,
        run_dir: Path,
        *,
        console: bool = True,
        console_stream: TextIO | None = None,
        enabled: bool = True,
    ):
        # enabled=False (a process other than 0 of a multi-process run): events go nowhere
        self.path = Path(run_dir) / "events.jsonl"
        self._open(self.path, enabled)
        self._file_log = structlog.wrap_logger(
            _JsonLinesFile(self),
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                _json_safe,
                structlog.processors.JSONRenderer(sort_keys=False),
            ],
        )
        self._console = None
        if console:
            self._console = structlog.wrap_logger(
                structlog.PrintLogger(console_stream or sys.stderr),
                processors=[
                    structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
                    _json_safe,
                    structlog.dev.ConsoleRenderer(colors=False, sort_keys=False),
                ],
            )
        self.context: dict[str, Any] = {}
        self._saved_config: tuple[bool, dict[str, Any]] | None = None

    def bind(self, **kw: Any) -> None:
        self.context.update(kw)

    def capture_library_logs(self) -> None:
        """Route `structlog.get_logger()` calls made elsewhere (the runners) into events.jsonl.

        Their info lines go to the file only, so they do not tear the progress bars; warnings
        and errors also reach the console; debug lines are dropped.
        """

        def forward(_, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
            if method in ("debug", "trace"):
                raise structlog.DropEvent
            event = str(event_dict.pop("event", "log"))
            level = "warning" if method == "warn" else method if method in ("info", "warning", "error") else "error"
            try:
                self.emit(event, level=level, console=level != "info", source="runner", **event_dict)
            except (OSError, ValueError):
                pass
            raise structlog.DropEvent

        if self._saved_config is None:  # the host's own configuration, given back on release
            self._saved_config = (structlog.is_configured(), dict(structlog.get_config()))
        structlog.configure(processors=[forward], cache_logger_on_first_use=False)

    def release_library_logs(self) -> None:
        """Give structlog back exactly as the host had it before :meth:`capture_library_logs`."""
        if self._saved_config is None:
            return
        was_configured, cfg = self._saved_config
        self._saved_config = None
        structlog.reset_defaults()
        if was_configured:
            structlog.configure(**cfg)

    def emit(self, event: str, level: str = "info", console: bool = True, **fields: Any) -> None:
        data = {**self.context, **fields}
        getattr(self._file_log, level)(event, **data)
        if event in _DURABLE:
            try:
                os.fsync(self._fh.fileno())
            except OSError:
                pass
        if console and self._console is not None:
            short = {k: v for k, v in fields.items() if k not in ("evidence", "metrics", "penalties_before", "penalties_after", "eval", "penalties")}
            getattr(self._console, level)(event, **short)



class MetricsLog(_AppendOnly):
    """RUN_DIR/metrics.jsonl: one line per training step."""

    def __init__(self, run_dir: Path, *, enabled: bool = True):
        self.path = Path(run_dir) / "metrics.jsonl"
        self._open(self.path, enabled)

    def write(self, record: dict[str, Any]) -> None:
        self._append(json.dumps(_clean(record), allow_nan=False) + "\n")

    def flush(self) -> None:
        self._fh.flush()



def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """All whole records of a JSONL file, and problems found.

    A torn final line (no newline, unparseable) is tolerated and reported as a problem of its
    own kind ('torn last line'); an unparseable line in the middle is damage.
    """
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return [], [f"{path}: missing"]
    lines = data.split(b"\n")
    last_complete = data.endswith(b"\n")
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        is_last = i == len(lines) or (i == len(lines) - 1 and last_complete)
        try:
            obj = json.loads(raw.decode("utf-8"))
            if not isinstance(obj, dict):
                raise ValueError("not an object")
            records.append(obj)
        except (ValueError, UnicodeDecodeError):
            if i == len(lines) and not last_complete:
                problems.append(f"{path}:{i}: torn last line (an interrupted write; ignored)")
            else:
                problems.append(f"{path}:{i}: unparseable line")
            _ = is_last
    return records, problems


def iter_events(run_dir: Path, event: str | None = None) -> Iterator[dict[str, Any]]:
    recs, _ = read_jsonl(Path(run_dir) / "events.jsonl")
    for r in recs:
        if event is None or r.get("event") == event:
            yield r


def truncate_to(path: Path, offset: int, orphan_suffix: str) -> int:
    """Cut a log back to `offset` bytes; the cut tail is kept beside it for forensics.

    Returns the number of bytes moved aside.
    """
    path = Path(path)
    if not path.exists():
        path.touch()
        return 0
    size = path.stat().st_size
    if size <= offset:
        return 0
    with open(path, "rb") as f:
        f.seek(offset)
        tail = f.read()
    orphan = path.with_name(f"{path.stem}.{orphan_suffix}.orphaned.jsonl")
    with open(orphan, "ab") as f:
        f.write(tail)
    with open(path, "r+b") as f:
        f.truncate(offset)
        f.flush()
        os.fsync(f.fileno())
    return len(tail)
