"""The write-ahead log on its own: framing, torn tails, checkpoints, single ownership."""
from __future__ import annotations

import os
import struct

import pytest

from storage.wal import MAGIC, WalLockedError, WriteAheadLog


def _all_records(wal: WriteAheadLog, seqs: list[int]) -> list[bytes]:
    return [payload for seq in seqs for payload in wal.records(seq)]


def test_records_come_back_in_order_after_reopen(tmp_path):
    wal = WriteAheadLog(tmp_path)
    wal.append([b"one", b"two"])
    wal.append([b"three"])
    wal.close()

    reopened = WriteAheadLog(tmp_path)
    sealed = reopened.seal()
    assert _all_records(reopened, sealed) == [b"one", b"two", b"three"]
    reopened.append([b"four"])  # a restart writes a new segment, never into an old one
    assert reopened.seal()[-1] > sealed[-1]


def test_torn_tail_is_discarded_and_earlier_records_survive(tmp_path):
    wal = WriteAheadLog(tmp_path)
    wal.append([b"kept-1"])
    wal.append([b"kept-2"])
    wal.append([b"x" * 1000])
    wal.close()
    (segment,) = sorted(tmp_path.glob("*.wal"))
    size = segment.stat().st_size
    os.truncate(segment, size - 10)  # the last record was cut mid-write by a crash

    reopened = WriteAheadLog(tmp_path)
    assert _all_records(reopened, reopened.seal()) == [b"kept-1", b"kept-2"]


def test_corrupt_record_stops_replay_of_that_segment(tmp_path):
    wal = WriteAheadLog(tmp_path)
    wal.append([b"good"])
    wal.append([b"flipped"])
    wal.close()
    (segment,) = sorted(tmp_path.glob("*.wal"))
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF  # last payload byte no longer matches its CRC
    segment.write_bytes(bytes(data))

    reopened = WriteAheadLog(tmp_path)
    assert _all_records(reopened, reopened.seal()) == [b"good"]


def test_length_past_end_and_header_only_tails_are_ignored(tmp_path):
    wal = WriteAheadLog(tmp_path)
    wal.append([b"payload"])
    wal.close()
    (segment,) = sorted(tmp_path.glob("*.wal"))
    with open(segment, "ab") as fh:
        fh.write(struct.pack("<II", 1 << 20, 0) + b"partial")  # frame claims 1 MiB that never arrived
    empty = tmp_path / f"{999:020d}.wal"
    empty.write_bytes(MAGIC[:3])  # crashed while writing a new segment's header

    reopened = WriteAheadLog(tmp_path)
    assert _all_records(reopened, reopened.seal()) == [b"payload"]


def test_checkpoint_deletes_covered_segments_and_survives_restart(tmp_path):
    wal = WriteAheadLog(tmp_path, segment_bytes=64)  # tiny segments: every append seals one
    for i in range(5):
        wal.append([f"record-{i}".encode() * 10])
    sealed = wal.seal()
    assert len(sealed) == 5
    wal.checkpoint(sealed[2])
    assert len(list(tmp_path.glob("*.wal"))) == 2
    wal.close()

    reopened = WriteAheadLog(tmp_path)
    remaining = reopened.seal()
    assert remaining == sealed[3:]
    assert _all_records(reopened, remaining) == [b"record-3" * 10, b"record-4" * 10]


def test_only_one_owner_at_a_time(tmp_path):
    wal = WriteAheadLog(tmp_path)
    with pytest.raises(WalLockedError):
        WriteAheadLog(tmp_path)
    wal.close()
    WriteAheadLog(tmp_path).close()


def test_pending_bytes_tracks_unflushed_data(tmp_path):
    wal = WriteAheadLog(tmp_path)
    assert wal.pending_bytes == 0
    wal.append([b"a" * 100])
    assert wal.pending_bytes >= 100
    wal.checkpoint(wal.seal()[-1])
    assert wal.pending_bytes == 0
    wal.close()
