"""The spool's file format and segments: framing with CRCs, a torn tail tolerated, rotation,
replay that deletes what it replayed, segments of other live writers left alone, a bound."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest

from router.spool import HEADER, Record, Spool, SpoolFull, decode_records, encode_record


def _segments(directory: Path) -> list[Path]:
    return list(directory.glob("*.spool"))


RECORDS: list[Record] = [{"n": i, "name": f"caller ☎ {i}", "null": None} for i in range(3)]


def test_records_round_trip() -> None:
    data = b"".join(encode_record(r) for r in RECORDS)
    assert decode_records(data) == (RECORDS, False)
    assert decode_records(b"") == ([], False)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda d: d[:-1], id="short payload"),
        pytest.param(lambda d: d[: -len(encode_record(RECORDS[2])) + 3], id="short header"),
        pytest.param(lambda d: d[:-2] + b"X" + d[-1:], id="bad crc"),
        pytest.param(lambda d: d + HEADER.pack(1 << 30, 0), id="absurd length"),
    ],
)
def test_a_torn_tail_keeps_the_intact_records(damage: object) -> None:
    data = b"".join(encode_record(r) for r in RECORDS)
    records, torn = decode_records(damage(data))  # type: ignore[operator]
    assert torn and records == RECORDS[: len(records)] and len(records) >= 2


async def test_segments_rotate_and_replay_deletes_them(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1)
    assert spool.open() == []
    for record in RECORDS:
        await spool.append([record])
    assert len(_segments(tmp_path)) == 3  # each record filled a segment
    seen: list[Record] = []

    async def apply(records: list[Record]) -> None:
        seen.extend(records)

    assert await spool.replay(apply) == 3
    assert seen == RECORDS
    assert _segments(tmp_path) == []
    assert spool.pending_bytes() == 0


async def test_a_failed_replay_keeps_the_segment(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    await spool.append(RECORDS)

    async def refuse(records: list[Record]) -> None:
        raise OSError("postgres is down")

    with pytest.raises(OSError):
        await spool.replay(refuse)
    # A restarted worker finds the records and replays them.
    spool.close()
    again = Spool(tmp_path)
    assert again.open() == RECORDS
    seen: list[Record] = []

    async def apply(records: list[Record]) -> None:
        seen.extend(records)

    assert await again.replay(apply) == 3 and seen == RECORDS


async def test_a_segment_another_writer_holds_is_left_alone(tmp_path: Path) -> None:
    busy = tmp_path / "00000000000000000001-999.spool"
    busy.write_bytes(encode_record(RECORDS[0]))
    with busy.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        spool = Spool(tmp_path)
        assert spool.open() == []

        async def apply(records: list[Record]) -> None:
            raise AssertionError("replayed a segment in use")

        assert await spool.replay(apply) == 0
    assert busy.exists()


async def test_a_full_spool_refuses(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=100)
    spool.open()
    await spool.append([RECORDS[0]])
    with pytest.raises(SpoolFull):
        await spool.append(RECORDS)
    spool.close()
