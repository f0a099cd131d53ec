"""HTTP/2 framing and HPACK (RFC 9113, RFC 7541), the parts a gRPC server needs. Pure:
bytes in, frames and header lists out, and the bytes of the frames the server sends.

:class:`FrameReader` cuts a byte stream into frames; :class:`HeaderDecoder` decodes
header blocks with the connection's dynamic table (Huffman strings by the ``hpack``
package's decoder); :func:`encode_headers` writes header fields as literals that are
never indexed, so the server keeps no encoder table and an answer's header block can be
built once and reused. The connection's state (streams, flow control) lives in
:mod:`api_gateway.grpc_h2`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER = struct.Struct(">HBBBI")  # length (24 bits: 16 + 8), type, flags, stream id
DEFAULT_MAX_FRAME_BYTES = 16_384
DEFAULT_WINDOW_BYTES = 65_535
MAX_WINDOW_BYTES = 2**31 - 1
DEFAULT_TABLE_BYTES = 4_096


class FrameType(IntEnum):
    DATA = 0x0
    HEADERS = 0x1
    PRIORITY = 0x2
    RST_STREAM = 0x3
    SETTINGS = 0x4
    PUSH_PROMISE = 0x5
    PING = 0x6
    GOAWAY = 0x7
    WINDOW_UPDATE = 0x8
    CONTINUATION = 0x9


class Flag:
    END_STREAM = 0x1
    ACK = 0x1
    END_HEADERS = 0x4
    PADDED = 0x8
    PRIORITY = 0x20


class Setting(IntEnum):
    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6


class ErrorCode(IntEnum):
    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    ENHANCE_YOUR_CALM = 0xB


class H2Error(Exception):
    """The peer broke the protocol: the connection ends with GOAWAY and this code."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Frame:
    type: int  # a FrameType, or an unknown type (ignored, as the RFC asks)
    flags: int
    stream_id: int
    payload: bytes


def frame(type_: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame's bytes."""
    length = len(payload)
    return FRAME_HEADER.pack(length >> 8, length & 0xFF, type_, flags, stream_id) + payload


class FrameReader:
    """Bytes in, whole frames out; a frame longer than ``max_frame_bytes`` (the size
    this side announced) is a connection error."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        buffer = self._buffer
        buffer += data
        frames = []
        at, end = 0, len(buffer)
        unpack = FRAME_HEADER.unpack_from
        while end - at >= 9:
            high, low, type_, flags, stream_id = unpack(buffer, at)
            length = (high << 8) | low
            if length > self.max_frame_bytes:
                raise H2Error(
                    ErrorCode.FRAME_SIZE_ERROR,
                    f"a frame of {length} bytes, over the {self.max_frame_bytes} announced",
                )
            if end - at - 9 < length:
                break
            start = at + 9
            frames.append(
                Frame(type_, flags, stream_id & 0x7FFFFFFF, bytes(buffer[start : start + length]))
            )
            at = start + length
        if at:
            del buffer[:at]
        return frames


def strip_padding(frame_: Frame) -> bytes:
    """The payload of a DATA or HEADERS frame without its padding (and, for HEADERS, the
    priority fields)."""
    payload = frame_.payload
    start, end = 0, len(payload)
    if frame_.flags & Flag.PADDED:
        if not payload:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "a padded frame with no pad length")
        end -= payload[0]
        start = 1
    if frame_.type == FrameType.HEADERS and frame_.flags & Flag.PRIORITY:
        start += 5
    if end < start:
        raise H2Error(ErrorCode.PROTOCOL_ERROR, "padding longer than the frame")
    return payload[start:end]


# -- HPACK

STATIC_TABLE: tuple[tuple[bytes, bytes], ...] = HeaderTable.STATIC_TABLE
_STATIC_COUNT = len(STATIC_TABLE)  # 61
_ENTRY_OVERHEAD = 32


def decode_integer(data: bytes, at: int, prefix_bits: int) -> tuple[int, int]:
    """The integer at ``data[at]`` with an N-bit prefix, and where the next field starts."""
    if at >= len(data):
        raise H2Error(ErrorCode.COMPRESSION_ERROR, "a header block ends in an integer")
    mask = (1 << prefix_bits) - 1
    value = data[at] & mask
    at += 1
    if value < mask:
        return value, at
    shift = 0
    while True:
        if at >= len(data):
            raise H2Error(ErrorCode.COMPRESSION_ERROR, "a header block ends in an integer")
        byte = data[at]
        at += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at
        if shift > 28:
            raise H2Error(ErrorCode.COMPRESSION_ERROR, "an integer over 2^28 in HPACK")


def encode_integer(value: int, prefix_bits: int, first_byte_flags: int = 0) -> bytes:
    mask = (1 << prefix_bits) - 1
    if value < mask:
        return bytes((first_byte_flags | value,))
    out = bytearray((first_byte_flags | mask,))
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes, at: int) -> tuple[bytes, int]:
    if at >= len(data):
        raise H2Error(ErrorCode.COMPRESSION_ERROR, "a header block ends in a string")
    huffman = data[at] & 0x80
    length, at = decode_integer(data, at, 7)
    end = at + length
    if end > len(data):
        raise H2Error(ErrorCode.COMPRESSION_ERROR, "a header string past the block")
    raw = data[at:end]
    if huffman:
        try:
            raw = decode_huffman(raw)
        except Exception as exc:
            raise H2Error(ErrorCode.COMPRESSION_ERROR, f"a bad Huffman string ({exc})") from None
    return raw, end


class HeaderDecoder:
    """One connection's HPACK decoder: its dynamic table, at most ``max_table_bytes``
    (the HEADER_TABLE_SIZE this side announced)."""

    def __init__(self, max_table_bytes: int = DEFAULT_TABLE_BYTES) -> None:
        self.max_table_bytes = max_table_bytes
        self.table_bytes = max_table_bytes
        self._entries: list[tuple[bytes, bytes]] = []  # newest first
        self._size = 0

    def _field(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= _STATIC_COUNT:
            return STATIC_TABLE[index - 1]
        dynamic = index - _STATIC_COUNT - 1
        if 0 <= dynamic < len(self._entries):
            return self._entries[dynamic]
        raise H2Error(ErrorCode.COMPRESSION_ERROR, f"no header at HPACK index {index}")

    def _add(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + _ENTRY_OVERHEAD
        entries = self._entries
        if size > self.table_bytes:
            entries.clear()
            self._size = 0
            return
        entries.insert(0, (name, value))
        self._size += size
        self._shrink()

    def _shrink(self) -> None:
        entries = self._entries
        while self._size > self.table_bytes:
            name, value = entries.pop()
            self._size -= len(name) + len(value) + _ENTRY_OVERHEAD

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        headers = []
        at, end = 0, len(block)
        while at < end:
            byte = block[at]
            if byte & 0x80:  # indexed field
                index, at = decode_integer(block, at, 7)
                headers.append(self._field(index))
            elif byte & 0x40:  # literal, added to the table
                (name, value), at = self._literal(block, at, 6)
                headers.append((name, value))
                self._add(name, value)
            elif byte & 0x20:  # dynamic table size update
                size, at = decode_integer(block, at, 5)
                if size > self.max_table_bytes:
                    raise H2Error(
                        ErrorCode.COMPRESSION_ERROR,
                        f"an HPACK table of {size} bytes, over the {self.max_table_bytes} "
                        "announced",
                    )
                self.table_bytes = size
                self._shrink()
            else:  # literal, not indexed or never indexed
                field, at = self._literal(block, at, 4)
                headers.append(field)
        return headers

    def _literal(self, block: bytes, at: int, prefix_bits: int) -> tuple[tuple[bytes, bytes], int]:
        """A literal field: its name by index (or a string when the index is 0), then its
        value; and where the next field starts."""
        index, at = decode_integer(block, at, prefix_bits)
        if index:
            name = self._field(index)[0]
        else:
            name, at = _string(block, at)
        value, at = _string(block, at)
        return (name, value), at


def _literal(data: bytes) -> bytes:
    return encode_integer(len(data), 7) + data


def encode_headers(headers: list[tuple[bytes, bytes]]) -> bytes:
    """A header block of literals never indexed (no table on either side changes), names
    taken from the static table where it has them."""
    out = []
    for name, value in headers:
        index = _STATIC_NAMES.get(name)
        if index is None:
            out.append(b"\x10" + _literal(name) + _literal(value))
        else:
            out.append(encode_integer(index, 4, 0x10) + _literal(value))
    return b"".join(out)


_STATIC_NAMES: dict[bytes, int] = {}
for _i, (_name, _value) in enumerate(STATIC_TABLE, start=1):
    _STATIC_NAMES.setdefault(_name, _i)


def settings_payload(settings: dict[Setting, int]) -> bytes:
    return b"".join(struct.pack(">HI", key, value) for key, value in settings.items())


def parse_settings(payload: bytes) -> dict[int, int]:
    if len(payload) % 6:
        raise H2Error(ErrorCode.FRAME_SIZE_ERROR, f"a SETTINGS frame of {len(payload)} bytes")
    return dict(struct.iter_unpack(">HI", payload))


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(FrameType.WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment))


def rst_stream(stream_id: int, code: ErrorCode) -> bytes:
    return frame(FrameType.RST_STREAM, 0, stream_id, struct.pack(">I", code))


def goaway(last_stream_id: int, code: ErrorCode, debug: bytes = b"") -> bytes:
    return frame(FrameType.GOAWAY, 0, 0, struct.pack(">II", last_stream_id, code) + debug)
