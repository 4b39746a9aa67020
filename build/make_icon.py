"""Generate build/cache/chatserver.ico: a blue chat bubble with three white dots.

Standard library only (zlib + struct): every size is drawn from signed distance
functions (so edges are anti-aliased at any size), encoded as an RGBA PNG, and the
PNGs are packed into one multi-size ICO file.

Usage: python build/make_icon.py [OUTPUT.ico]
"""
import math
import os
import struct
import sys
import zlib

BUILD_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUTPUT = os.path.join(BUILD_DIR, "cache", "chatserver.ico")

# Windows picks from these: 16/24/32 for lists and the taskbar, 48 for Explorer
# "medium icons", 256 for "extra large icons". 256 is the largest ICO allows.
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256)
MAX_ICO_SIZE = 256

BUBBLE_RGB = (0x2D, 0x7F, 0xF9)   # blue body
DOT_RGB = (0xFF, 0xFF, 0xFF)      # white "typing" dots

# Design in unit coordinates (0..1, y grows downwards).
BODY_BOX = (0.06, 0.10, 0.94, 0.72)    # left, top, right, bottom
BODY_RADIUS = 0.18
TAIL = ((0.20, 0.62), (0.46, 0.62), (0.14, 0.93))
DOT_CENTERS_X = (0.29, 0.50, 0.71)
DOT_CENTER_Y = 0.41
DOT_RADIUS = 0.075

# ---------------------------------------------------------------------------
# Signed distance functions (negative inside), in unit coordinates.
# ---------------------------------------------------------------------------


def sd_rounded_box(x, y, box, radius):
    left, top, right, bottom = box
    cx, cy = (left + right) / 2, (top + bottom) / 2
    hx, hy = (right - left) / 2 - radius, (bottom - top) / 2 - radius
    qx, qy = abs(x - cx) - hx, abs(y - cy) - hy
    outside = math.hypot(max(qx, 0.0), max(qy, 0.0))
    return outside + min(max(qx, qy), 0.0) - radius


def sd_triangle(x, y, tri):
    """Exact triangle distance (Inigo Quilez's sdTriangle)."""
    (x0, y0), (x1, y1), (x2, y2) = tri
    edges = ((x1 - x0, y1 - y0), (x2 - x1, y2 - y1), (x0 - x2, y0 - y2))
    starts = ((x0, y0), (x1, y1), (x2, y2))
    sign = 1.0 if edges[0][0] * edges[2][1] - edges[0][1] * edges[2][0] > 0 else -1.0
    best_d2, best_s = float("inf"), float("inf")
    for (ex, ey), (sx, sy) in zip(edges, starts):
        vx, vy = x - sx, y - sy
        t = max(0.0, min(1.0, (vx * ex + vy * ey) / (ex * ex + ey * ey)))
        px, py = vx - ex * t, vy - ey * t
        best_d2 = min(best_d2, px * px + py * py)
        best_s = min(best_s, sign * (vx * ey - vy * ex))
    return -math.sqrt(best_d2) * (1.0 if best_s > 0 else -1.0)


def sd_dots(x, y):
    return min(math.hypot(x - cx, y - DOT_CENTER_Y) for cx in DOT_CENTERS_X) - DOT_RADIUS


def coverage(distance, pixel):
    """Fraction of a pixel covered by a shape whose edge is `distance` away."""
    return max(0.0, min(1.0, 0.5 - distance / pixel))


# ---------------------------------------------------------------------------
# Rendering and encoding
# ---------------------------------------------------------------------------


def render_rgba(size):
    """Return `size` rows of RGBA bytes (straight alpha)."""
    pixel = 1.0 / size
    rows = []
    for j in range(size):
        y = (j + 0.5) * pixel
        row = bytearray()
        for i in range(size):
            x = (i + 0.5) * pixel
            body = coverage(min(sd_rounded_box(x, y, BODY_BOX, BODY_RADIUS),
                                sd_triangle(x, y, TAIL)), pixel)
            dot = coverage(sd_dots(x, y), pixel)
            rgb = [round(b + (d - b) * dot) for b, d in zip(BUBBLE_RGB, DOT_RGB)]
            row += bytes(rgb) + bytes([round(255 * body)])
        rows.append(bytes(row))
    return rows


def png_chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def encode_png(size, rows):
    # IHDR: width, height, bit depth 8, colour type 6 (RGBA), deflate, filter 0, no interlace.
    ihdr = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    raw = b"".join(b"\x00" + row for row in rows)   # filter type 0 (None) on every row
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b""))


def encode_ico(images):
    """images: list of (size, png_bytes). ICONDIR, then one ICONDIRENTRY each, then data."""
    header = struct.pack("<HHH", 0, 1, len(images))   # reserved, type 1 = icon, count
    offset = len(header) + 16 * len(images)
    entries, blobs = b"", b""
    for size, png in images:
        # A width/height byte of 0 means 256.
        dim = 0 if size == MAX_ICO_SIZE else size
        entries += struct.pack("<BBBBHHII", dim, dim, 0, 0, 1, 32, len(png), offset)
        blobs += png
        offset += len(png)
    return header + entries + blobs


def build_icon(sizes=ICON_SIZES):
    return encode_ico([(size, encode_png(size, render_rgba(size))) for size in sizes])


def main(argv):
    output = argv[1] if len(argv) > 1 else DEFAULT_OUTPUT
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    data = build_icon()
    with open(output, "wb") as f:
        f.write(data)
    print("wrote %s (%d bytes, sizes %s)" % (output, len(data), ",".join(map(str, ICON_SIZES))))


if __name__ == "__main__":
    main(sys.argv)
