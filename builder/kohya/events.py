"""Per-epoch scalars from sd-scripts' TensorBoard logs, read without TensorBoard.

sd-scripts logs through accelerate's TensorBoard tracker into ``<logging_dir>/<timestamp>/
network_train/events.out.tfevents.*``; with validation on, ``train_network.py`` logs
``loss/validation/epoch_average`` once per epoch at step = the epoch number (``epoch_logging``
passes the epoch as TensorBoard's step). An event file is a sequence of TFRecords (length,
masked CRC-32C of the length, an ``Event`` protobuf, masked CRC-32C of it); only the few
protobuf fields a scalar needs are decoded here. A record whose checksum fails (a file still
being written) ends that file's reading; the records before it stand.
"""

from __future__ import annotations

import struct
from pathlib import Path

VALIDATION_LOSS = "loss/validation/epoch_average"  # train_network.py, the epoch-end validation


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    """TFRecord's checksum: the CRC-32C rotated right by 15 bits plus a constant."""
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def records(path: Path) -> list[bytes]:
    """The intact records of one event file, in order."""
    data = Path(path).read_bytes()
    out, pos = [], 0
    while pos + 12 <= len(data):
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        end = pos + 12 + length + 4
        if header_crc != masked_crc(header) or end > len(data):
            break
        body = data[pos + 12 : pos + 12 + length]
        if struct.unpack("<I", data[end - 4 : end])[0] != masked_crc(body):
            break
        out.append(body)
        pos = end
    return out


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, bytes | int]]:
    """(field number, wire type, value) of a protobuf message: varints as ints, the rest as bytes."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            out.append((number, wire, value))
        elif wire == 1:
            out.append((number, wire, buf[pos : pos + 8]))
            pos += 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            out.append((number, wire, buf[pos : pos + size]))
            pos += size
        elif wire == 5:
            out.append((number, wire, buf[pos : pos + 4]))
            pos += 4
        else:
            raise ValueError(f"protobuf wire type {wire} is not used by TensorBoard scalars")
    return out


def _tensor_scalar(buf: bytes) -> float | None:
    """A float TensorProto (new-style scalar summaries): float_val (5) or tensor_content (4)."""
    for number, wire, value in _fields(buf):
        if number == 5 and wire == 2 and len(value) >= 4:  # packed float_val
            return struct.unpack("<f", value[:4])[0]  # type: ignore[index]
        if number == 5 and wire == 5:
            return struct.unpack("<f", value)[0]  # type: ignore[arg-type]
        if number == 4 and wire == 2 and len(value) == 4:  # tensor_content of one float32
            return struct.unpack("<f", value)[0]  # type: ignore[arg-type]
    return None


def scalars(path: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every ``tag`` scalar in one event file, in file order.

    Event: step = 2 (int64), summary = 5; Summary: value = 1 (repeated); Value: tag = 1,
    simple_value = 2 (float), tensor = 8 (TensorProto).
    """
    out = []
    wanted = tag.encode("utf-8")
    for body in records(path):
        fields = _fields(body)
        step = next((v for n, w, v in fields if n == 2 and w == 0), 0)
        for n, w, summary in fields:
            if n != 5 or w != 2:
                continue
            for vn, vw, value in _fields(summary):  # type: ignore[arg-type]
                if vn != 1 or vw != 2:
                    continue
                parts = _fields(value)  # type: ignore[arg-type]
                if next((v for pn, _, v in parts if pn == 1), None) != wanted:
                    continue
                number = next((struct.unpack("<f", v)[0] for pn, pw, v in parts if pn == 2 and pw == 5), None)  # type: ignore[arg-type]
                if number is None:
                    number = next((_tensor_scalar(v) for pn, pw, v in parts if pn == 8 and pw == 2), None)  # type: ignore[arg-type]
                if number is not None:
                    out.append((int(step), float(number)))  # type: ignore[arg-type]
    return out


def epoch_scalars(log_dir: Path, tag: str = VALIDATION_LOSS) -> dict[int, float]:
    """epoch -> value of ``tag`` over every event file under ``log_dir``.

    Files are read in path order (sd-scripts names run folders by start time), so a resumed
    training's later value for an epoch replaces the earlier run's. An unreadable or foreign
    file is skipped: the loss column is a help, never a reason for the sample stage to fail.
    """
    out: dict[int, float] = {}
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        return out
    for path in sorted(log_dir.rglob("events.out.tfevents.*")):
        try:
            for step, value in scalars(path, tag):
                out[step] = value
        except (OSError, ValueError, IndexError, struct.error):
            continue
    return out
