"""QR Code encoder and renderers.

Correctness is checked three ways:
- differentially against segno (module matrix, and automatic version/mask choice),
- by a real decoder (zxing-cpp) reading the PNG, the SVG and the console text,
- by unit tests of the pieces against published vectors (ISO/IEC 18004 Annex I,
  Table 7 capacities, Table D.1 version information, ZXing's format-info table).
"""
import io
import random
import re
import struct
import zlib
import xml.etree.ElementTree as ET

import pytest
import segno
import segno.consts
import segno.encoder
import zxingcpp
from PIL import Image

import chatserver as cs

LEVELS = ("L", "M", "Q", "H")
URL = "http://192.168.1.20:5555/#k=Zq3vK9dX2mPw7Lr8sT4yB6nH1cJ5fG0a"
TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


# -- segno as the reference encoder ----------------------------------------------------

def _spec_padding_bits(buff, version, length):
    # ISO/IEC 18004:2015 7.4.10: "If the bit stream length is such that it does
    # not end at a codeword boundary, padding bits with binary value 0 shall be
    # added". segno 1.6.6 adds 8 - length % 8 bits, i.e. a whole 0x00 codeword
    # when the stream already ends on a boundary, which is every byte-mode symbol
    # with room for the 4-bit terminator (known bug: heuer/segno issues #123, #148;
    # the fix below is the one proposed there). Such symbols still decode, but
    # they are not the spec's, so the reference is segno with this one fix.
    if version not in (segno.consts.VERSION_M1, segno.consts.VERSION_M3):
        buff.extend([0] * (-length % 8))


@pytest.fixture(scope="module")
def ref():
    """segno with spec-conformant padding; returns a make_qr wrapper."""
    original = segno.encoder.write_padding_bits
    segno.encoder.write_padding_bits = _spec_padding_bits
    try:
        def make(data, ec, version=None, mask=None):
            return segno.make_qr(data, error=ec, version=version, mask=mask,
                                 boost_error=False, mode="byte")
        yield make
    finally:
        segno.encoder.write_padding_bits = original


def _matrix_of(segno_code):
    return [[bool(cell) for cell in row] for row in segno_code.matrix]


def _assert_same_as_segno(ref, data, ec, version=None, mask=None):
    ours = cs.qr_encode(data, ec, version, mask)
    theirs = ref(data, ec, version, mask)
    assert theirs.mode == "byte"
    label = f"{len(data)} bytes, {ec}, version={version}, mask={mask}"
    assert (ours.version, ours.mask) == (theirs.version, theirs.mask), label
    assert ours.ec == ec and theirs.error == ec
    assert ours.modules == _matrix_of(theirs), label
    return ours


def _random_bytes(rng, length):
    return bytes(rng.randrange(256) for _ in range(length))


def _url_with_token(rng, token_length):
    token = "".join(rng.choice(TOKEN_ALPHABET) for _ in range(token_length))
    return f"http://192.168.1.20:5555/#k={token}"


def test_every_version_and_level_with_forced_mask_matches_segno(ref):
    rng = random.Random(18004)
    for version in range(1, 41):
        for level_index, ec in enumerate(LEVELS):
            capacity = cs._qr_max_bytes(version, ec)
            data = _random_bytes(rng, rng.randrange(1, capacity + 1))
            mask = (version + level_index) % 8  # every mask used at every level
            _assert_same_as_segno(ref, data, ec, version, mask)


def test_full_capacity_symbols_match_segno(ref):
    # No pad codewords at all, and (when the capacity ends < 4 bits before the
    # end) a truncated terminator: the edge of the bit-stream rules.
    rng = random.Random(7)
    for version in (1, 2, 6, 7, 9, 10, 14, 21, 27, 32, 40):
        for mask, ec in enumerate(LEVELS):
            data = _random_bytes(rng, cs._qr_max_bytes(version, ec))
            _assert_same_as_segno(ref, data, ec, version, mask * 2)


def test_all_eight_masks_match_segno_on_one_payload(ref):
    data = URL.encode()
    for mask in range(8):
        for ec in LEVELS:
            _assert_same_as_segno(ref, data, ec, None, mask)


def test_automatic_version_and_mask_match_segno_for_random_payloads(ref):
    rng = random.Random(2024)
    lengths = [1, 2, 3, 7, 14, 15, 17, 18, 32, 53, 100, 154, 230, 255, 256, 271,
               331, 500, 777, 1000, 1273, 1274, 1500, 1663, 1664, 2000]
    for length in lengths:
        data = _random_bytes(rng, length)
        for ec in LEVELS:
            if length > cs._qr_max_bytes(40, ec):
                with pytest.raises(cs.QrDataTooLong):
                    cs.qr_encode(data, ec)
                with pytest.raises(segno.DataOverflowError):
                    ref(data, ec)
                continue
            _assert_same_as_segno(ref, data, ec)


def test_automatic_choice_matches_segno_for_lan_urls(ref):
    rng = random.Random(5555)
    for token_length in (0, 1, 8, 16, 22, 32, 43, 64, 86, 128, 200):
        url = _url_with_token(rng, token_length)
        for ec in LEVELS:
            ours = _assert_same_as_segno(ref, url.encode(), ec)
            assert cs.qr_encode(url, ec).modules == ours.modules  # str is UTF-8


def test_non_ascii_str_is_encoded_as_utf8(ref):
    text = "Grüße, 世界 ✓ #k=abc"
    ours = cs.qr_encode(text, "Q")
    assert ours.modules == _matrix_of(ref(text.encode("utf-8"), "Q"))


# -- a real decoder -------------------------------------------------------------------

def _decode(image):
    # try_invert=False: a symbol drawn with swapped colours must NOT pass.
    results = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode,
                                     try_invert=False)
    assert len(results) == 1, "exactly one QR code found"
    assert results[0].format == zxingcpp.BarcodeFormat.QRCode
    return results[0]


def _image_of(dark_rows, pixels_per_module=6):
    """Draw a matrix (True = dark, quiet zone already included) in black on white."""
    height, width = len(dark_rows), len(dark_rows[0])
    image = Image.new("L", (width, height))
    image.putdata([0 if dark else 255 for row in dark_rows for dark in row])
    return image.resize((width * pixels_per_module, height * pixels_per_module), Image.NEAREST)


def _with_quiet_zone(qr, quiet):
    span = range(-quiet, qr.size + quiet)
    return [[0 <= r < qr.size and 0 <= c < qr.size and qr.modules[r][c] for c in span] for r in span]


@pytest.mark.parametrize("ec", LEVELS)
def test_png_decodes_to_the_url(ec):
    qr = cs.qr_encode(URL, ec)
    image = Image.open(io.BytesIO(cs.qr_render_png(qr, scale=4)))
    assert image.size == ((qr.size + 8) * 4,) * 2
    result = _decode(image)
    assert result.text == URL
    assert result.ec_level == ec


def test_png_of_a_large_symbol_decodes():
    url = _url_with_token(random.Random(1), 600)
    qr = cs.qr_encode(url, "L")
    assert qr.version >= 14  # several blocks, version information present
    assert _decode(Image.open(io.BytesIO(cs.qr_render_png(qr, scale=3)))).text == url


def test_non_ascii_payload_decodes_byte_exact():
    text = "Grüße, 世界 ✓"
    qr = cs.qr_encode(text, "M")
    assert _decode(Image.open(io.BytesIO(cs.qr_render_png(qr)))).bytes == text.encode("utf-8")


def _svg_to_dark_rows(svg_text):
    """Rasterise OUR svg text back into modules: read viewBox and background
    rect, then run the path's M/h/v/z commands, one closed rectangle at a time."""
    root = ET.fromstring(svg_text.encode("utf-8"))
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == ns + "svg"
    assert root.get("shape-rendering") == "crispEdges"
    _, _, width, height = (int(v) for v in root.get("viewBox").split())
    paths = root.findall(ns + "path")
    assert len(paths) == 1
    rects = root.findall(ns + "rect")
    assert len(rects) == 1 and rects[0].get("fill") == "#ffffff"
    assert (int(rects[0].get("width")), int(rects[0].get("height"))) == (width, height)
    assert paths[0].get("fill") == "#000000"
    dark = [[False] * width for _ in range(height)]
    x = y = 0
    corners = []
    for command, number in re.findall(r"([MhvzHV])\s*([-\d.,\s]*)", paths[0].get("d")):
        if command == "M":
            x, y = (int(v) for v in number.split(","))
            corners = [(x, y)]
        elif command == "h":
            x += int(number)
            corners.append((x, y))
        elif command == "v":
            y += int(number)
            corners.append((x, y))
        elif command == "z":
            xs = [cx for cx, _ in corners]
            ys = [cy for _, cy in corners]
            assert len(corners) == 4, "each subpath is an axis-aligned rectangle"
            for row in range(min(ys), max(ys)):
                for col in range(min(xs), max(xs)):
                    dark[row][col] = True
            x, y = corners[0]
        else:
            raise AssertionError(f"unexpected path command {command}")
    return dark


@pytest.mark.parametrize("ec", LEVELS)
def test_svg_text_decodes_to_the_url(ec):
    qr = cs.qr_encode(URL, ec)
    svg = cs.qr_render_svg(qr, scale=5, quiet=4)
    root = ET.fromstring(svg.encode("utf-8"))
    assert root.get("width") == root.get("height") == str((qr.size + 8) * 5)
    dark = _svg_to_dark_rows(svg)
    assert dark == _with_quiet_zone(qr, 4)
    assert _decode(_image_of(dark)).text == URL


_ANSI_SGR = re.compile(r"\x1b\[[0-9;]*m")
_LIGHT_HALVES = {"\u2588": (True, True), "\u2580": (True, False),
                 "\u2584": (False, True), " ": (False, False)}


def _console_to_dark_rows(text, ascii_only):
    """Parse the printed text back into modules (True = dark). Ink = light."""
    lines = _ANSI_SGR.sub("", text).split("\n")
    assert len({len(line) for line in lines}) == 1, "a rectangle of text"
    if ascii_only:
        rows = []
        for line in lines:
            cells = [line[i:i + 2] for i in range(0, len(line), 2)]
            assert set(cells) <= {"##", "  "}
            rows.append([cell == "  " for cell in cells])
        return rows
    rows = []
    for line in lines:
        halves = [_LIGHT_HALVES[ch] for ch in line]
        rows.append([not top for top, _ in halves])
        rows.append([not bottom for _, bottom in halves])
    width = len(rows[0])
    if len(rows) > width:  # odd module count: the last half-row is padding
        assert len(rows) == width + 1 and not any(rows[width])
    return rows[:width]


@pytest.mark.parametrize("ascii_only", [False, True])
@pytest.mark.parametrize("ansi", [False, True])
def test_console_text_decodes_to_the_url(ascii_only, ansi):
    qr = cs.qr_encode(URL, "M")
    text = cs.qr_render_console(qr, ascii_only=ascii_only, ansi=ansi)
    side = qr.size + 8
    lines = text.split("\n")
    assert len(lines) == (side if ascii_only else (side + 1) // 2)
    if not ascii_only:
        assert all(ch in "\u2588\u2580\u2584 " for ch in _ANSI_SGR.sub("", text) if ch != "\n")
    else:
        assert text.isascii()
    if ansi:
        assert all(line.startswith("\x1b[97;40m") and line.endswith("\x1b[0m") for line in lines)
    else:
        assert "\x1b" not in text
    dark = _console_to_dark_rows(text, ascii_only)
    assert dark == _with_quiet_zone(qr, 4)
    assert _decode(_image_of(dark)).text == URL


def test_console_quiet_zone_is_printed_as_ink():
    # Light modules are ink, so the 4-module quiet zone is a solid block frame.
    qr = cs.qr_encode("x", "L")
    lines = cs.qr_render_console(qr).split("\n")
    assert lines[0] == lines[1] == "\u2588" * (qr.size + 8)
    assert all(line.startswith("\u2588" * 4) and line.endswith("\u2588" * 4) for line in lines)
    # Without quiet zone the first ASCII row is the finders' top edge: 7 dark
    # modules (blank), then the light separator (ink).
    assert cs.qr_render_console(qr, quiet=0, ascii_only=True).split("\n")[0].startswith("  " * 7 + "##")


def _stream(encoding):
    return io.TextIOWrapper(io.BytesIO(), encoding=encoding)


def test_console_can_encode_depends_on_the_stream_encoding():
    assert cs.qr_console_can_encode(_stream("utf-8")) is True
    assert cs.qr_console_can_encode(_stream("utf-16")) is True
    assert cs.qr_console_can_encode(_stream("cp1252")) is False
    assert cs.qr_console_can_encode(_stream("latin-1")) is False
    assert cs.qr_console_can_encode(_stream("ascii")) is False
    # cp437 (the DOS / legacy console code page) does contain the three block
    # characters (0xDB, 0xDF, 0xDC), so the Unicode drawing works there.
    assert cs.qr_console_can_encode(_stream("cp437")) is True


def test_console_can_encode_without_a_usable_encoding():
    class NoEncoding:
        pass

    class NoneEncoding:
        encoding = None

    class BogusEncoding:
        encoding = "no-such-codec"

    assert cs.qr_console_can_encode(NoEncoding()) is False
    assert cs.qr_console_can_encode(NoneEncoding()) is False
    assert cs.qr_console_can_encode(BogusEncoding()) is False


# -- PNG and SVG structure -----------------------------------------------------------

def _png_chunks(png):
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    offset, chunks = 8, []
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset:offset + 4])
        kind = png[offset + 4:offset + 8]
        payload = png[offset + 8:offset + 8 + length]
        (crc,) = struct.unpack(">I", png[offset + 8 + length:offset + 12 + length])
        assert crc == zlib.crc32(kind + payload), kind
        chunks.append((kind, payload))
        offset += 12 + length
    return chunks


def test_png_is_one_bit_grayscale_with_valid_chunks():
    qr = cs.qr_encode(URL, "M")
    png = cs.qr_render_png(qr, scale=3, quiet=2)
    chunks = _png_chunks(png)
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    side = (qr.size + 4) * 3
    assert struct.unpack(">IIBBBBB", chunks[0][1]) == (side, side, 1, 0, 0, 0, 0)
    raw = zlib.decompress(chunks[1][1])
    stride = 1 + (side + 7) // 8
    assert len(raw) == side * stride
    image = Image.open(io.BytesIO(png))
    assert image.mode == "1"
    # Pixel (quiet zone) is white; the top-left finder corner is black.
    assert image.getpixel((0, 0)) == 255
    assert image.getpixel((2 * 3, 2 * 3)) == 0


def test_png_pixels_match_the_modules():
    qr = cs.qr_encode("pixels", "H")
    image = Image.open(io.BytesIO(cs.qr_render_png(qr, scale=2, quiet=1))).convert("L")
    dark = _with_quiet_zone(qr, 1)
    for row in range(len(dark)):
        for col in range(len(dark)):
            for dy in range(2):
                for dx in range(2):
                    pixel = image.getpixel((col * 2 + dx, row * 2 + dy))
                    assert pixel == (0 if dark[row][col] else 255)


def test_svg_is_standalone_xml_with_one_path():
    qr = cs.qr_encode(URL, "M")
    svg = cs.qr_render_svg(qr)
    assert svg.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    assert svg.count("<path") == 1
    root = ET.fromstring(svg.encode("utf-8"))
    assert root.get("viewBox") == f"0 0 {qr.size + 8} {qr.size + 8}"
    assert root.get("width") == str((qr.size + 8) * 8)


@pytest.mark.parametrize("render", [cs.qr_render_png, cs.qr_render_svg])
@pytest.mark.parametrize("scale", [0, -1, 65, 2.5, True, "8"])
def test_renderers_reject_a_bad_scale(render, scale):
    qr = cs.qr_encode("x")
    with pytest.raises(ValueError, match="scale"):
        render(qr, scale=scale)
    assert render(qr, scale=1)  # the same code still renders


@pytest.mark.parametrize("quiet", [-1, 65, 1.0, None])
def test_renderers_reject_a_bad_quiet_zone(quiet):
    qr = cs.qr_encode("x")
    for render in (cs.qr_render_png, cs.qr_render_svg, cs.qr_render_console):
        with pytest.raises(ValueError, match="quiet"):
            render(qr, quiet=quiet)


# -- the pieces ---------------------------------------------------------------------

def test_reed_solomon_iso_annex_i_vector():
    # ISO/IEC 18004 Annex I: "01234567" as 1-M; 16 data codewords, 10 ECC codewords.
    data = bytes.fromhex("10 20 0C 56 61 80 EC 11 EC 11 EC 11 EC 11 EC 11")
    ecc = cs._qr_rs_remainder(data, cs._qr_rs_generator(10))
    assert ecc == bytes.fromhex("A5 24 D4 C1 ED 36 C7 87 2C 55")


def test_reed_solomon_hello_world_vector():
    # "HELLO WORLD" as 1-M (alphanumeric), the worked example of thonky.com's tutorial.
    data = bytes.fromhex("20 5B 0B 78 D1 72 DC 4D 43 40 EC 11 EC 11 EC 11")
    ecc = cs._qr_rs_remainder(data, cs._qr_rs_generator(10))
    assert list(ecc) == [196, 35, 39, 119, 235, 215, 231, 226, 93, 23]


def test_reed_solomon_generator_has_the_spec_roots():
    for degree in (7, 10, 13, 17, 30):
        generator = [1] + cs._qr_rs_generator(degree)
        for power in range(degree):
            root = cs._QR_GF_EXP[power]
            value = 0
            for coefficient in generator:  # Horner, in GF(256)
                value = cs._qr_gf_multiply(value, root) ^ coefficient
            assert value == 0, (degree, power)


# ZXing's FORMAT_INFO_DECODE_LOOKUP: index = (level bits << 3) | mask, with the
# level bits M=00, L=01, H=10, Q=11 (ISO 18004 Table 12 / Annex C).
ZXING_FORMAT_INFO = [
    0x5412, 0x5125, 0x5E7C, 0x5B4B, 0x45F9, 0x40CE, 0x4F97, 0x4AA0,
    0x77C4, 0x72F3, 0x7DAA, 0x789D, 0x662F, 0x6318, 0x6C41, 0x6976,
    0x1689, 0x13BE, 0x1CE7, 0x19D0, 0x0762, 0x0255, 0x0D0C, 0x083B,
    0x355F, 0x3068, 0x3F31, 0x3A06, 0x24B4, 0x2183, 0x2EDA, 0x2BED,
]


def test_format_bits_known_values():
    assert cs._qr_format_bits("L", 4) == 0b110011000101111
    assert cs._qr_format_bits("M", 0) == 0b101010000010010
    level_of_bits = {0b00: "M", 0b01: "L", 0b10: "H", 0b11: "Q"}
    for index, expected in enumerate(ZXING_FORMAT_INFO):
        assert cs._qr_format_bits(level_of_bits[index >> 3], index & 7) == expected


def test_version_information_known_values():
    # ISO/IEC 18004 Table D.1.
    assert cs._qr_version_bits(7) == 0x07C94
    assert cs._qr_version_bits(8) == 0x085BC
    assert cs._qr_version_bits(21) == 0x15683
    assert cs._qr_version_bits(40) == 0x28C69


def test_version_information_is_drawn_only_from_version_7():
    bits = cs._qr_version_bits(7)
    qr = cs.qr_encode(b"v7", "M", version=7, mask=0)
    for bit_index in range(18):
        expected = bool((bits >> bit_index) & 1)
        row, col = qr.size - 11 + bit_index % 3, bit_index // 3
        assert qr.modules[row][col] == expected   # above the bottom-left finder
        assert qr.modules[col][row] == expected   # left of the top-right finder


def test_alignment_positions_spot_checks():
    # ISO/IEC 18004 Annex E, Table E.1.
    assert cs._qr_alignment_positions(1) == []
    assert cs._qr_alignment_positions(2) == [6, 18]
    assert cs._qr_alignment_positions(7) == [6, 22, 38]
    assert cs._qr_alignment_positions(32) == [6, 34, 60, 86, 112, 138]
    assert cs._qr_alignment_positions(36) == [6, 24, 50, 76, 102, 128, 154]
    assert cs._qr_alignment_positions(40) == [6, 30, 58, 86, 114, 142, 170]


def test_data_codewords_put_pads_right_after_the_terminator():
    # "known", 1-L: 0100 | 00000101 | 6b 6e 6f 77 6e | 0000, then EC 11 EC ...
    assert cs._qr_data_codewords(b"known", 1, "L") == bytes.fromhex(
        "4056b6e6f776e0" + "ec11" * 6)


# ISO/IEC 18004 Table 7, byte mode capacities.
TABLE_7_BYTES = {
    (1, "L"): 17, (1, "M"): 14, (1, "Q"): 11, (1, "H"): 7,
    (9, "L"): 230, (9, "M"): 180, (9, "Q"): 130, (9, "H"): 98,
    (10, "L"): 271, (10, "M"): 213, (10, "Q"): 151, (10, "H"): 119,
    (27, "L"): 1465, (27, "M"): 1125, (27, "Q"): 805, (27, "H"): 625,
    (40, "L"): 2953, (40, "M"): 2331, (40, "Q"): 1663, (40, "H"): 1273,
}


def test_byte_capacities_match_table_7():
    for (version, ec), capacity in TABLE_7_BYTES.items():
        assert cs._qr_max_bytes(version, ec) == capacity


def test_capacity_boundary_for_every_forced_version():
    for version in range(1, 41):
        for ec in LEVELS:
            capacity = cs._qr_max_bytes(version, ec)
            with pytest.raises(cs.QrDataTooLong) as info:
                cs.qr_encode(bytes(capacity + 1), ec, version=version)
            assert f"version {version}-{ec} holds at most {capacity}" in str(info.value)


def test_capacity_boundary_picks_the_next_version():
    for ec in LEVELS:
        for version in range(1, 40):
            capacity = cs._qr_max_bytes(version, ec)
            assert cs._qr_choose_version(capacity, ec, None) == version
            assert cs._qr_choose_version(capacity + 1, ec, None) == version + 1


@pytest.mark.parametrize("ec", LEVELS)
def test_largest_payload_fits_version_40_and_one_more_byte_raises(ec):
    capacity = TABLE_7_BYTES[(40, ec)]
    qr = cs.qr_encode(bytes(capacity), ec, mask=0)
    assert (qr.version, qr.size) == (40, 177)
    with pytest.raises(cs.QrDataTooLong, match=f"level {ec} holds at most {capacity}"):
        cs.qr_encode(bytes(capacity + 1), ec)


def test_too_long_is_a_value_error_and_counts_utf8_bytes():
    assert issubclass(cs.QrDataTooLong, ValueError)
    # 1-L holds 17 bytes: 8 "é" are 16 bytes (fit), 9 are 18 (do not).
    assert cs.qr_encode("é" * 8, "L", version=1).version == 1
    with pytest.raises(cs.QrDataTooLong, match="18 bytes"):
        cs.qr_encode("é" * 9, "L", version=1)
    assert cs.qr_encode("é" * 9, "L").version == 2


@pytest.mark.parametrize("kwargs, message", [
    ({"ec": "X"}, "error correction level"),
    ({"ec": "m"}, "error correction level"),
    ({"version": 0}, "version"),
    ({"version": 41}, "version"),
    ({"version": True}, "version"),
    ({"version": 2.0}, "version"),
    ({"mask": 8}, "mask"),
    ({"mask": -1}, "mask"),
])
def test_bad_arguments_raise_value_error_not_too_long(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        cs.qr_encode("hello", **kwargs)
    assert not isinstance(info.value, cs.QrDataTooLong)
    assert cs.qr_encode("hello").modules  # and encoding still works


@pytest.mark.parametrize("data", [None, 42, ["a"]])
def test_data_of_the_wrong_type_raises_type_error(data):
    with pytest.raises(TypeError, match="bytes or str"):
        cs.qr_encode(data)


def test_bytes_like_inputs_are_accepted():
    expected = cs.qr_encode(b"abc").modules
    assert cs.qr_encode(bytearray(b"abc")).modules == expected
    assert cs.qr_encode(memoryview(b"abc")).modules == expected
    assert cs.qr_encode("abc").modules == expected


def test_empty_payload_is_a_valid_version_1_symbol(ref):
    qr = _assert_same_as_segno(ref, b"", "H")
    assert qr.version == 1


def test_public_fields_and_function_patterns():
    qr = cs.qr_encode(URL, "Q", mask=5)
    assert isinstance(qr, cs.QrCode)
    assert (qr.ec, qr.mask, qr.size) == ("Q", 5, 4 * qr.version + 17)
    assert all(type(cell) is bool for row in qr.modules for cell in row)
    size = qr.size
    finder = [[max(abs(r - 3), abs(c - 3)) != 2 for c in range(7)] for r in range(7)]
    for top, left in ((0, 0), (0, size - 7), (size - 7, 0)):
        assert [row[left:left + 7] for row in qr.modules[top:top + 7]] == finder
    for k in range(8, size - 8):  # timing patterns
        assert qr.modules[6][k] == qr.modules[k][6] == (k % 2 == 0)
    assert qr.modules[size - 8][8] is True  # the dark module
    assert not qr.is_dark(-1, 0) and not qr.is_dark(0, size)
    assert "version=" in repr(qr)


def test_format_information_is_drawn_twice():
    qr = cs.qr_encode(URL, "H", mask=3)
    bits = cs._qr_format_bits("H", 3)
    for copy in cs._qr_format_positions(qr.size):
        read = sum(qr.modules[row][col] << index for index, (row, col) in enumerate(copy))
        assert read == bits


def test_penalty_rules_on_small_lines():
    assert cs._qr_run_penalty(bytes([1] * 4)) == 0
    assert cs._qr_run_penalty(bytes([1] * 5)) == 3
    assert cs._qr_run_penalty(bytes([0] * 7 + [1] + [1] * 6)) == (3 + 2) + (3 + 2)
    pattern = bytes([1, 0, 1, 1, 1, 0, 1])
    assert cs._qr_finder_like_penalty(bytes(4) + pattern + bytes([1, 1, 1, 1])) == 40
    assert cs._qr_finder_like_penalty(bytes([1, 1, 1, 1]) + pattern + bytes(4)) == 40
    assert cs._qr_finder_like_penalty(bytes([1, 1, 0, 0]) + pattern + bytes([0, 0, 1, 1])) == 0
    assert cs._qr_finder_like_penalty(pattern) == 40  # the quiet zone counts as light
    # Two patterns sharing a dark module: the search resumes after a counted
    # pattern, so the second one is not counted again (segno does the same).
    assert cs._qr_finder_like_penalty(bytes(4) + bytes([1, 0, 1, 1, 1, 0, 1, 1, 1, 0, 1]) + bytes(4)) == 40
    assert cs._qr_block_penalty([bytes([1, 1, 0]), bytes([1, 1, 0])]) == 3
    half = [bytes([1, 0] * 5)] * 10
    assert cs._qr_balance_penalty(half) == 0
    assert cs._qr_balance_penalty([bytes([1] * 10)] * 10) == 100
    # 5 of 9 dark = 55.6 %: k = floor(5.6 / 5) = 1.
    assert cs._qr_balance_penalty([bytes([1, 1, 1]), bytes([1, 1, 0]), bytes(3)]) == 10
