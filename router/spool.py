"""The durable local spool: call records written while Postgres is unavailable, replayed later.

Format: append-only segment files of records, each `length (4 bytes, big-endian) | CRC-32 of
the payload (4 bytes) | payload (UTF-8 JSON object)`. A batch of records is written and then
fsynced once (group fsync); a record is durable when `append` returns. A crash can only tear
the tail of the segment being written, so a reader stops at the first short or corrupt record.

Segments are named `<time_ns>-<pid>.spool` and locked (flock) by the process writing them, so
several workers can share one directory: a segment is replayed only by whoever can lock it,
that is, once its writer has rotated away from it or died. A replayed segment is deleted.

Records: a call to record (`encode_call`) or a call's end (`encode_ending`), each a JSON object
carrying the spool schema `v` and its `kind`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import structlog

from store.calls import CallEnd, Candidate, NewCall, candidate_json

HEADER = struct.Struct(">II")
SUFFIX = ".spool"
# Bytes per segment: a replay reads one segment at a time, and a few thousand records of a few
# hundred bytes each is one comfortable batch of work.
SEGMENT_BYTES = 1024 * 1024
# Bytes in all segments of a directory: about a million call records, hours of a busy
# worker's traffic; past it `append` refuses rather than fill the disk.
MAX_SPOOL_BYTES = 512 * 1024 * 1024
# A single record: a call record is well under 2 KB; anything near this is a bug.
MAX_RECORD_BYTES = 1024 * 1024

Record = dict[str, Any]
# The schema of a record's fields, in each record as `v`.
SPOOL_SCHEMA = 1
# The kinds of spool record. Records spooled before endings were carry no kind: calls.
CALL, ENDING = "call", "ending"

log = structlog.get_logger()


class SpoolFull(Exception):
    """The spool holds MAX_SPOOL_BYTES already: the record was not written."""


def encode_record(record: Record) -> bytes:
    """One framed record: header (length, CRC-32) then the JSON payload."""
    # ASCII escapes: any str, even a lone surrogate, encodes; nothing can fail to spool.
    payload = json.dumps(record, separators=(",", ":")).encode()
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def decode_records(data: bytes) -> tuple[list[Record], bool]:
    """The records framed in `data`, and whether it ended in a torn (short or corrupt) one."""
    records: list[Record] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < HEADER.size:
            return records, True
        length, crc = HEADER.unpack_from(data, offset)
        start = offset + HEADER.size
        payload = data[start : start + length]
        if length > MAX_RECORD_BYTES or len(payload) < length or zlib.crc32(payload) != crc:
            return records, True
        try:
            record = json.loads(payload)
        except ValueError:
            return records, True
        if not isinstance(record, dict):
            return records, True
        records.append(record)
        offset = start + length
    return records, False


def encode_call(call: NewCall) -> Record:
    """A call as a spool record."""
    return {
        "v": SPOOL_SCHEMA,
        "kind": CALL,
        "call_id": call.call_id,
        "provider": call.provider,
        "provider_call_id": call.provider_call_id,
        "channel": call.channel,
        "from_number": call.from_number,
        "routing_revision": call.routing_revision,
        "started_at": call.started_at.isoformat(),
        "drawn": call.drawn,
        "remember": call.remember,
        "candidates": [candidate_json(c) for c in call.candidates],
    }


def encode_ending(ending: CallEnd) -> Record:
    """A call's end as a spool record."""
    fields = asdict(ending) | {"ended_at": ending.ended_at.isoformat()}
    return {"v": SPOOL_SCHEMA, "kind": ENDING, **fields}


def _fields(record: Record, kind: str) -> dict[str, Any]:
    """The fields of a spool record of `kind`, without the schema and kind markers."""
    if record.get("v") != SPOOL_SCHEMA or record.get("kind", CALL) != kind:
        raise ValueError(f"not a {kind} record: {record.get('v')!r}, {record.get('kind')!r}")
    return {k: v for k, v in record.items() if k not in ("v", "kind")}


def _candidate(spooled: Any) -> Candidate:
    """A spooled candidate: an object, or the positional array [label, agent_id, version,
    draft_revision, config_hash] spooled before candidates were objects (still on disk)."""
    return Candidate(**spooled) if isinstance(spooled, dict) else Candidate(*spooled)


def decode_call(record: Record) -> NewCall:
    """The call a spool record holds; ValueError (or KeyError, TypeError) when it is not one."""
    fields = _fields(record, CALL)
    fields["started_at"] = datetime.fromisoformat(fields["started_at"])
    fields["candidates"] = tuple(_candidate(c) for c in fields["candidates"])
    return NewCall(**fields)


def decode_ending(record: Record) -> CallEnd:
    """The call's end a spool record holds; ValueError (or KeyError, TypeError) when it is not
    one."""
    fields = _fields(record, ENDING)
    fields["ended_at"] = datetime.fromisoformat(fields["ended_at"])
    return CallEnd(**fields)


def decode_record(record: Record) -> NewCall | CallEnd:
    """Whatever a spool record holds; ValueError (or KeyError, TypeError) when unreadable."""
    return decode_ending(record) if record.get("kind") == ENDING else decode_call(record)


def _read_segment(file: IO[bytes], name: str) -> list[Record]:
    """Every intact record of a segment file (a torn tail is logged and skipped)."""
    records, torn = decode_records(file.read())
    if torn:
        log.warning("spool_torn_tail", segment=name, records=len(records))
    return records


def _claim(path: Path) -> tuple[IO[bytes], list[Record]] | None:
    """The segment opened and locked, with its records; None while another process writes or
    replays it, or once it has been replayed and deleted. Closing the file releases it."""
    try:
        file = path.open("rb")
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Deleted by a replayer between our open and our lock: nothing left to do.
        if os.fstat(file.fileno()).st_nlink == 0:
            file.close()
            return None
        return file, _read_segment(file, path.name)
    except BlockingIOError:
        file.close()
        return None


def _fsync_dir(directory: Path) -> None:
    """Make creations and deletions of files in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """One process's handle on a spool directory (see the module docstring)."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = SEGMENT_BYTES,
        max_bytes: int = MAX_SPOOL_BYTES,
    ) -> None:
        self.directory = directory
        self._segment_bytes = segment_bytes
        self._max_bytes = max_bytes
        self._current: IO[bytes] | None = None
        self._current_path: Path | None = None
        self._current_size = 0
        # Serialises file work: appends, rotation and replay each run in a thread.
        self._lock = asyncio.Lock()

    def open(self) -> list[Record]:
        """Create the directory; returns the records of segments nobody is writing (a previous
        run's), so the caller can index them before they are replayed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        records: list[Record] = []
        for path in self._segments():
            claimed = _claim(path)
            if claimed is not None:
                claimed[0].close()
                records.extend(claimed[1])
        return records

    def _segments(self) -> list[Path]:
        """Segment files oldest first, but the one this process is writing."""
        return sorted(p for p in self.directory.glob("*" + SUFFIX) if p != self._current_path)

    def pending_bytes(self) -> int:
        """Bytes in every segment of the directory, this process's and others'."""
        total = 0
        for path in self.directory.glob("*" + SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        return total

    async def append(self, records: list[Record]) -> None:
        """Write `records` and fsync them once; SpoolFull when the spool has no room."""
        data = b"".join(encode_record(r) for r in records)
        async with self._lock:
            await asyncio.to_thread(self._append, data)

    def _append(self, data: bytes) -> None:
        if self.pending_bytes() + len(data) > self._max_bytes:
            raise SpoolFull(f"the spool in {self.directory} is full")
        if self._current is None or self._current_size >= self._segment_bytes:
            self._rotate()
        assert self._current is not None
        self._current.write(data)
        self._current.flush()
        os.fsync(self._current.fileno())
        self._current_size += len(data)

    def _rotate(self) -> None:
        """Close the segment being written (it becomes replayable) and start a new one."""
        self._close_current()
        path = self.directory / f"{time.time_ns():020d}-{os.getpid()}{SUFFIX}"
        file = path.open("ab")
        fcntl.flock(file, fcntl.LOCK_EX)
        _fsync_dir(self.directory)
        self._current, self._current_path, self._current_size = file, path, 0

    def _close_current(self) -> None:
        if self._current is not None:
            self._current.close()  # releases the lock
        self._current, self._current_path = None, None

    async def replay(self, apply: Callable[[list[Record]], Awaitable[None]]) -> int:
        """Feed every segment nobody else is writing (this process's too) to `apply`, oldest
        first, deleting each one `apply` accepted; stops at the first that raises. Returns the
        number of records replayed."""
        async with self._lock:
            if self._current_size:
                self._close_current()
            replayed = 0
            for path in self._segments():
                claimed = await asyncio.to_thread(_claim, path)
                if claimed is None:
                    continue
                file, records = claimed
                try:
                    await apply(records)
                    path.unlink()
                    await asyncio.to_thread(_fsync_dir, self.directory)
                finally:
                    file.close()
                replayed += len(records)
            return replayed

    def close(self) -> None:
        """Release this process's segment (what it holds is durable already)."""
        empty = self._current_path if self._current_size == 0 else None
        self._close_current()
        if empty is not None:
            empty.unlink(missing_ok=True)
