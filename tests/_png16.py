"""A minimal 16-bit PNG writer for tests: Pillow cannot write 16-bit colour PNGs."""

import struct
import zlib

import numpy as np

_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type


def write_png16(path, array):
    """Write a uint16 array of shape (H, W) or (H, W, C), C in 1..4, as a 16-bit PNG."""
    array = np.asarray(array, dtype=">u2")
    if array.ndim == 2:
        array = array[..., None]
    height, width, channels = array.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in array.reshape(height, -1))

    def chunk(tag, data):
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, _COLOUR_TYPES[channels], 0, 0, 0)
    with open(path, "wb") as file:
        file.write(b"\x89PNG\r\n\x1a\n")
        file.write(chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
