"""Label glyphs for MapLibre GL styles, made by the server from a free font (no CDN, no font service).

MapLibre asks ``/fonts/{fontstack}/{start}-{end}.pbf`` for each block of 256 code points a label
uses: a protobuf of signed-distance-field bitmaps (the format of mapbox/glyph-pbf, 24 px, a 3 px
border, radius 8, cut-off 0.25, as node-fontnik makes them). The glyphs come from DejaVu Sans
(Debian's ``fonts-dejavu-core``), which covers Vietnamese: precomposed letters (U+1EA0–U+1EF9),
Đ/đ, Ơ/ơ, Ư/ư and the combining marks. Each block is rendered once per process (up to ~1 s, in one of
the heavy-work slots) and kept.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

from gis_ioc.errors import InvalidInput, NotFound

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = {"DejaVu Sans Book": "DejaVuSans.ttf", "DejaVu Sans Bold": "DejaVuSans-Bold.ttf"}
SIZE = 24  # px, the size MapLibre lays glyphs out at
BORDER = 3  # px of SDF around each glyph
RADIUS = 8.0
CUTOFF = 0.25
SCALE = 4  # glyphs are rendered this much larger, and the distance field measured on that finer grid


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, value: int | bytes | str, signed: bool = False) -> bytes:
    if isinstance(value, int):
        encoded = (value << 1) ^ (value >> 31) if signed else value  # zigzag for sint32
        return _varint(number << 3) + _varint(encoded & 0xFFFFFFFF if signed else encoded)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _font_file(fontstack: str) -> Path:
    """The first font of a stack (``"DejaVu Sans Book,Noto Sans Regular"``) that this server has."""
    for name in (part.strip() for part in fontstack.split(",")):
        if name in FONTS and (FONT_DIR / FONTS[name]).is_file():
            return FONT_DIR / FONTS[name]
    raise NotFound(f"fontstack: no font {fontstack!r} here (fonts: {', '.join(FONTS)}; Debian package "
                   "fonts-dejavu-core)", param="fontstack")


def parse_range(text: str) -> int:
    """``0-255``, ``7680-7935``…: the first code point of a block of 256 (400 naming ``range`` otherwise)."""
    start_text, _, end_text = text.partition("-")
    if not (start_text.isdigit() and end_text.isdigit()):
        raise InvalidInput(f"range: {text!r} is not START-END", param="range")
    start, end = int(start_text), int(end_text)
    if start % 256 or end != start + 255 or end > 0xFFFF:
        raise InvalidInput(f"range: {text!r} is not a block of 256 code points (0-255, 256-511, … 65280-65535)",
                           param="range")
    return start


def _signed_distance(inside: np.ndarray, points_x: np.ndarray, points_y: np.ndarray) -> np.ndarray:
    """Distance (fine pixels) from each point to the nearest edge of ``inside``, negative within it."""
    height, width = inside.shape
    padded = np.pad(inside, 1)
    edge = inside & ~(padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    rows, cols = np.nonzero(edge)
    if rows.size == 0:
        return np.full(points_x.shape, RADIUS * SCALE)
    ex, ey = cols + 0.5, rows + 0.5
    best = np.full(points_x.size, np.inf)
    flat_x, flat_y = points_x.ravel(), points_y.ravel()
    for start in range(0, ex.size, 512):  # bounded memory for large glyphs
        dx = flat_x[:, None] - ex[None, start:start + 512]
        dy = flat_y[:, None] - ey[None, start:start + 512]
        best = np.minimum(best, np.sqrt(dx * dx + dy * dy).min(axis=1))
    xi = np.clip(np.floor(flat_x).astype(int), 0, width - 1)
    yi = np.clip(np.floor(flat_y).astype(int), 0, height - 1)
    within = inside[yi, xi] & (flat_x >= 0) & (flat_x < width) & (flat_y >= 0) & (flat_y < height)
    return np.where(within, -best, best).reshape(points_x.shape)


def _glyph(face: object, code: int) -> bytes | None:
    import freetype

    if not face.get_char_index(code):  # type: ignore[attr-defined]
        return None
    face.load_char(code, freetype.FT_LOAD_RENDER | freetype.FT_LOAD_NO_HINTING)  # type: ignore[attr-defined]
    slot = face.glyph  # type: ignore[attr-defined]
    bitmap = slot.bitmap
    advance = int(round(slot.advance.x / 64 / SCALE))
    message = _field(1, code)
    if bitmap.width == 0 or bitmap.rows == 0:
        return message + _field(3, 0) + _field(4, 0) + _field(5, 0, True) + _field(6, 0, True) + _field(7, advance)
    fine = np.array(bitmap.buffer, dtype=np.uint8).reshape(bitmap.rows, bitmap.pitch)[:, :bitmap.width] >= 128
    left_fine, top_fine = slot.bitmap_left, slot.bitmap_top
    left = math.floor(left_fine / SCALE)
    top = math.ceil(top_fine / SCALE)
    width = math.ceil((left_fine + bitmap.width) / SCALE) - left
    height = top - math.floor((top_fine - bitmap.rows) / SCALE)
    # centres of the coarse pixels (border included), in the fine bitmap's own coordinates
    cols = (left - BORDER + np.arange(width + 2 * BORDER) + 0.5) * SCALE - left_fine
    rows = (top_fine - (top + BORDER - np.arange(height + 2 * BORDER) - 0.5) * SCALE)
    grid_x, grid_y = np.meshgrid(cols, rows)
    distance = _signed_distance(fine, grid_x, grid_y) / SCALE
    values = np.clip(np.round(255 - 255 * (distance / RADIUS + CUTOFF)), 0, 255).astype(np.uint8)
    ascender = face.size.ascender / 64 / SCALE  # type: ignore[attr-defined]
    return (message + _field(2, values.tobytes()) + _field(3, width) + _field(4, height)
            + _field(5, left, True) + _field(6, int(round(top - ascender)), True) + _field(7, advance))


def glyph_block(fontstack: str, start: int) -> bytes:
    """The protobuf of one block of 256 code points for a font stack (its first font this server has)."""
    return _block(str(_font_file(fontstack)), start)


@functools.lru_cache(maxsize=128)  # every block DejaVu Sans Book (42) and Bold (41) have glyphs in
def _block(path: str, start: int) -> bytes:
    import freetype

    fontstack = next(name for name, file in FONTS.items() if path.endswith("/" + file))
    face = freetype.Face(path)
    face.set_char_size(SIZE * SCALE * 64)
    glyphs = [g for g in (_glyph(face, code) for code in range(start, start + 256)) if g is not None]
    stack = _field(1, fontstack) + _field(2, f"{start}-{start + 255}") + b"".join(_field(3, g) for g in glyphs)
    return _field(1, stack)
