"""The byte layout of one learned-codec bitstream.

A CompressAI model codes one image as a few entropy-coded streams (``[y]`` for the
factorized prior, ``[y, z]`` for hyperprior models). One fairbits bitstream is::

    varint(H) varint(W) varint(len(stream_0)) ... varint(len(stream_{k-2})) stream_0 ... stream_{k-1}

``H, W`` are the unpadded image size (the padded size and the latent shape follow from
them and the model's downsampling factor); the last stream's length is implied by the
end of the data; the number of streams ``k`` is fixed by the model and not stored.
Varints are unsigned LEB128 (7 bits per byte, low group first). For a 256 x 256 image
with two streams the header is 2 + 2 + 1..2 bytes.
"""

from __future__ import annotations

from typing import Sequence


def write_varint(n: int) -> bytes:
    """Unsigned LEB128 encoding of ``n >= 0``."""
    if n < 0:
        raise ValueError(f"varint must be >= 0, got {n}")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode a varint at ``data[pos:]`` → ``(value, position after it)``."""
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated bitstream header")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def pack(height: int, width: int, streams: Sequence[bytes]) -> bytes:
    """One bitstream from the image size and the model's ``k >= 1`` streams."""
    if not streams:
        raise ValueError("at least one stream is needed")
    head = write_varint(height) + write_varint(width)
    head += b"".join(write_varint(len(s)) for s in streams[:-1])
    return head + b"".join(bytes(s) for s in streams)


def unpack(data: bytes, n_streams: int) -> tuple[int, int, list[bytes]]:
    """Inverse of :func:`pack` → ``(height, width, streams)``."""
    height, pos = read_varint(data, 0)
    width, pos = read_varint(data, pos)
    lengths = []
    for _ in range(n_streams - 1):
        n, pos = read_varint(data, pos)
        lengths.append(n)
    streams = []
    for n in lengths:
        if pos + n > len(data):
            raise ValueError("truncated bitstream")
        streams.append(bytes(data[pos:pos + n]))
        pos += n
    streams.append(bytes(data[pos:]))
    return height, width, streams
