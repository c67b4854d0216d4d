"""Crafted files: small inputs whose headers declare far more than they hold, or hold damaged metadata."""

import struct
import zlib
from pathlib import Path

from PIL import Image


def tiled_tiff(width: int, height: int, tile: int) -> bytes:
    """A gray TIFF of one deflate tile of tile x tile pixels (holding 64 KB of zeros), as libtiff reads it."""
    data, entries = zlib.compress(bytes(65536)), []
    tiles = -(-width // tile) * -(-height // tile)
    layout = 8 + 2 + 12 * 10 + 4  # the header, then the directory of 10 entries; the tiles' offsets and sizes
    for tag, kind, value in [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 8), (262, 3, 1), (277, 3, 1),
                             (322, 4, tile), (323, 4, tile)]:  # fmt: skip
        entries.append(struct.pack("<HHII", tag, kind, 1, value))
    offsets = [layout + 8 * tiles] * tiles
    entries.append(struct.pack("<HHII", 324, 4, tiles, layout if tiles > 1 else offsets[0]))
    entries.append(struct.pack("<HHII", 325, 4, tiles, layout + 4 * tiles if tiles > 1 else len(data)))
    directory = struct.pack("<H", len(entries)) + b"".join(entries) + struct.pack("<I", 0)
    tables = struct.pack(f"<{tiles}I", *offsets) + struct.pack(f"<{tiles}I", *[len(data)] * tiles)
    return b"II*\0" + struct.pack("<I", 8) + directory + tables + data


# EXIF blocks that Pillow fails to read: a bad byte order ("not a TIFF file"), one that ends after its byte order
# (struct.error), and one whose orientation (6) reads but that Pillow fails to write back, as turning the photo
# upright does (a tag's count that does not fit: struct.error).
def exif_with_a_rational_description(orientation: int) -> bytes:
    """An EXIF block (big-endian TIFF) of the orientation and an ImageDescription stored as a RATIONAL, not ASCII:
    Pillow reads it, and fails to write it back (AttributeError: 'IFDRational' object has no attribute 'encode')."""
    entries = [(0x0112, 3, 1, struct.pack(">HH", orientation, 0)), (0x010E, 5, 1, struct.pack(">I", 8 + 2 + 24 + 4))]
    directory = b"".join(struct.pack(">HHI", tag, kind, count) + value for tag, kind, count, value in entries)
    return b"MM\x00*" + struct.pack(">IH", 8, len(entries)) + directory + bytes(4) + struct.pack(">II", 1, 2)


DAMAGED_EXIF = {
    "byte order": b"\xff\xff\xff\xff\x00\x00\x00\x08",
    "cut short": b"MM\x00*",
    "not writable": bytes.fromhex(
        "4d4d002a00000008000401250002000000060000003e0112000300000001000600000132000200000014000000448825000400000001"
        "000000580000"
    )
    + bytes(40),
    "a tag of another type": exif_with_a_rational_description(6),
}


def png_with_exif(png: bytes, exif: bytes) -> bytes:
    """The PNG with an eXIf chunk of `exif` before its image data."""
    chunk = b"eXIf" + exif
    at = png.index(b"IDAT") - 4
    return png[:at] + struct.pack(">I", len(exif)) + chunk + struct.pack(">I", zlib.crc32(chunk)) + png[at:]


def two_frame_gif(photo: Path, path: Path) -> Path:
    """A GIF of the photo in gray, then the same upside down."""
    first = Image.open(photo).convert("L")
    first.save(path, save_all=True, append_images=[first.transpose(Image.Transpose.ROTATE_180)])
    return path
