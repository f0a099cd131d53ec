"""HTTP/2 framing and HPACK (api_gateway/http2.py), against the hpack package's encoder
and decoder as the reference."""

from __future__ import annotations

import struct

import hpack
import pytest

from api_gateway.http2 import (
    ErrorCode,
    Flag,
    Frame,
    FrameReader,
    FrameType,
    H2Error,
    HeaderDecoder,
    decode_integer,
    encode_headers,
    encode_integer,
    frame,
    parse_settings,
    strip_padding,
)

GRPC_HEADERS = [
    (":scheme", "http"),
    (":method", "POST"),
    (":authority", "127.0.0.1:8081"),
    (":path", "/inference.GRPCInferenceService/ModelInfer"),
    ("te", "trailers"),
    ("content-type", "application/grpc"),
    ("user-agent", "grpc-python/1.81.1 grpc-c/51.0.0 (linux; chttp2)"),
    ("grpc-accept-encoding", "identity, deflate, gzip"),
    ("authorization", "Bearer ik_0123456789abcdef"),
]


def as_bytes(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(n.encode(), v.encode()) for n, v in headers]


@pytest.mark.parametrize("prefix_bits", [4, 5, 6, 7])
@pytest.mark.parametrize("value", [0, 1, 14, 15, 30, 31, 62, 63, 126, 127, 128, 1337, 2**20])
def test_integers_round_trip(prefix_bits: int, value: int) -> None:
    encoded = encode_integer(value, prefix_bits, 0)
    assert decode_integer(encoded, 0, prefix_bits) == (value, len(encoded))


def test_the_rfc_example_integer() -> None:
    # RFC 7541 C.1.2: 1337 with a 5-bit prefix
    assert encode_integer(1337, 5) == bytes([0x1F, 0x9A, 0x0A])


def test_blocks_of_a_stateful_encoder_decode_in_order() -> None:
    """The client's encoder indexes what it sends: later blocks are mostly table
    references, and a header that changes each call adds entries that evict old ones."""
    encoder, decoder = hpack.Encoder(), HeaderDecoder()
    for call in range(300):
        headers = [*GRPC_HEADERS, ("grpc-timeout", f"{29_999_000 - call}u")]
        if call % 7 == 0:
            headers.append(("x-request-id", "r" * (call % 50) + str(call)))
        assert decoder.decode(encoder.encode(headers)) == as_bytes(headers)


def test_huffman_and_plain_literals_and_never_indexed() -> None:
    for huffman in (True, False):
        encoder, decoder = hpack.Encoder(), HeaderDecoder()
        headers = [(n.encode(), v.encode(), True) for n, v in GRPC_HEADERS]  # never indexed
        block = encoder.encode(headers, huffman=huffman)
        assert decoder.decode(block) == as_bytes(GRPC_HEADERS)


def test_a_table_size_update_shrinks_and_evicts() -> None:
    encoder, decoder = hpack.Encoder(), HeaderDecoder()
    decoder.decode(encoder.encode(GRPC_HEADERS))
    encoder.header_table_size = 64
    headers = [("x-a", "1"), *GRPC_HEADERS]
    assert decoder.decode(encoder.encode(headers)) == as_bytes(headers)
    assert decoder.table_bytes == 64


def test_our_blocks_decode_with_the_reference_decoder() -> None:
    fields = [
        (b":status", b"200"),
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"5"),
        (b"grpc-message", b"x" * 300),
        (b"x-infaas-error", b"not_found"),
    ]
    decoded = hpack.Decoder().decode(encode_headers(fields), raw=True)
    assert decoded == fields


@pytest.mark.parametrize(
    ("block", "why"),
    [
        (b"\xff\x80", "ends in an integer"),  # an index whose continuation never ends
        (b"\xbf\x7f", "no header at HPACK index"),  # index 190: past both tables
        (b"\x80", "no header at HPACK index 0"),
        (b"\x40\x05ab", "past the block"),  # a name of 5 bytes, two given
        (b"\x3f\xe2\x1f", "over the 4096 announced"),  # a table size update to 4,097
        (b"\x40\x81\xff\x01a", "Huffman"),  # a Huffman name that is all padding
    ],
)
def test_bad_header_blocks_are_compression_errors(block: bytes, why: str) -> None:
    with pytest.raises(H2Error, match=why) as caught:
        HeaderDecoder().decode(block)
    assert caught.value.code == ErrorCode.COMPRESSION_ERROR


def test_frames_are_cut_from_a_stream_in_any_pieces() -> None:
    wire = (
        frame(FrameType.HEADERS, Flag.END_HEADERS, 1, b"h" * 10)
        + frame(FrameType.DATA, Flag.END_STREAM, 1, b"d" * 1000)
        + frame(FrameType.PING, 0, 0, b"12345678")
    )
    for piece in (1, 7, 9, 100, len(wire)):
        reader = FrameReader()
        frames = []
        for at in range(0, len(wire), piece):
            frames += reader.feed(wire[at : at + piece])
        assert frames == [
            Frame(FrameType.HEADERS, Flag.END_HEADERS, 1, b"h" * 10),
            Frame(FrameType.DATA, Flag.END_STREAM, 1, b"d" * 1000),
            Frame(FrameType.PING, 0, 0, b"12345678"),
        ]


def test_a_frame_over_the_announced_size_is_refused() -> None:
    with pytest.raises(H2Error, match="over the 16384 announced") as caught:
        FrameReader().feed(frame(FrameType.DATA, 0, 1, b"x" * 16_385))
    assert caught.value.code == ErrorCode.FRAME_SIZE_ERROR


def test_the_reserved_bit_of_a_stream_id_is_ignored() -> None:
    raw = struct.pack(">HBBBI", 0, 0, FrameType.DATA, 0, 0x80000003)
    assert FrameReader().feed(raw)[0].stream_id == 3


def test_padding_and_priority_are_stripped() -> None:
    padded = Frame(FrameType.DATA, Flag.PADDED, 1, bytes([3]) + b"body" + b"\0\0\0")
    assert strip_padding(padded) == b"body"
    headers = Frame(
        FrameType.HEADERS, Flag.PADDED | Flag.PRIORITY, 1, bytes([2]) + b"PPPPP" + b"blk" + b"\0\0"
    )
    assert strip_padding(headers) == b"blk"
    with pytest.raises(H2Error, match="padding longer than the frame"):
        strip_padding(Frame(FrameType.DATA, Flag.PADDED, 1, bytes([9]) + b"ab"))


def test_settings_parse_and_a_ragged_payload_is_a_frame_size_error() -> None:
    assert parse_settings(struct.pack(">HIHI", 4, 1 << 20, 5, 32_768)) == {4: 1 << 20, 5: 32_768}
    with pytest.raises(H2Error) as caught:
        parse_settings(b"\0\4\0\0")
    assert caught.value.code == ErrorCode.FRAME_SIZE_ERROR
