###############################################################################
# QR Code encoder (ISO/IEC 18004:2015) ########################################
###############################################################################
#
# Part file: the lead pastes this section verbatim into chatserver.py (section 9,
# "QR encoder, then its console/SVG/PNG renderers").
#
# Stdlib modules this section needs (merge into chatserver.py's import block):
#   binascii  - crc32 of PNG chunks
#   re        - run-length search for penalty rule N1
#   struct    - PNG signature / chunk headers
#   zlib      - PNG IDAT compression
import binascii
import re
import struct
import zlib

# What this section implements, and what it leaves out on purpose:
# - Byte mode only (the payload is a URL that carries a token; byte mode keeps
#   every payload encodable and the capacity rule simple). No ECI header: the
#   spec's default for byte mode is ISO-8859-1, but mainstream decoders (ZXing,
#   the phone cameras) detect UTF-8 there, and our URLs are ASCII anyway.
# - Versions 1-40, levels L/M/Q/H, all 8 masks, format and version information.
# - No Micro QR, no structured append, no numeric/alphanumeric/kanji segments.
#
# The pipeline follows ISO/IEC 18004:2015 clause 7.1 ("Encode procedure overview"):
#   steps 1-2  data analysis and encodation (bits -> data codewords) -> _qr_data_codewords()
#   step 3     error correction coding (Reed-Solomon per block)      -> _qr_rs_remainder()
#   step 4     structure final message (interleave the blocks)       -> _qr_interleave_blocks()
#   step 5     module placement (function patterns, zigzag)         -> QrCode._draw_*()
#   step 6     data masking: try the 8 patterns, keep lowest penalty -> QrCode._choose_mask()
#   step 7     format and version information                        -> QrCode._draw_format_bits()
#   QrCode.__init__ runs these steps in this order.


class QrDataTooLong(ValueError):
    """The data does not fit in version 40 (or in the forced version) at the chosen level."""


# -- Limits and spec constants -------------------------------------------------

_QR_MIN_VERSION = 1
_QR_MAX_VERSION = 40
_QR_EC_LEVELS = ("L", "M", "Q", "H")
_QR_NUM_MASKS = 8

# Table 12: error correction level indicator in the format information.
_QR_EC_FORMAT_BITS = {"L": 0b01, "M": 0b00, "Q": 0b11, "H": 0b10}

# Table 2: mode indicator for byte mode.
_QR_MODE_BYTE = 0b0100
_QR_MODE_INDICATOR_BITS = 4
# Table 3: character count indicator length for byte mode, by version range.
_QR_BYTE_COUNT_BITS_SMALL = 8    # versions 1-9
_QR_BYTE_COUNT_BITS_LARGE = 16   # versions 10-40
_QR_SMALL_VERSION_LAST = 9
# 7.4.9: "The end of data in the symbol is signalled by the Terminator sequence
# of 0 bits [...] 0000" - it may be truncated if the capacity ends earlier.
_QR_TERMINATOR_BITS = 4
# 7.4.10: "adding the Pad Codewords 11101100 and 00010001 alternately".
_QR_PAD_CODEWORDS = (0xEC, 0x11)

# Reed-Solomon over GF(2^8) with the field's prime polynomial
# x^8 + x^4 + x^3 + x^2 + 1 (7.5.2), and the generator's roots alpha^0..alpha^(n-1).
_QR_GF_PRIME_POLY = 0x11D

# 7.9.1: format information is a (15,5) BCH code, generator
# G(x) = x^10 + x^8 + x^5 + x^4 + x^2 + x + 1, XORed with the mask 101010000010010
# "to ensure that no combination of error correction level and mask pattern
# will result in an all-zero data string".
_QR_FORMAT_GENERATOR = 0x537
_QR_FORMAT_ECC_BITS = 10
_QR_FORMAT_XOR_MASK = 0x5412
_QR_FORMAT_TOTAL_BITS = 15
# 7.10: version information is an (18,6) BCH code, generator
# G(x) = x^12 + x^11 + x^10 + x^9 + x^8 + x^5 + x^2 + 1; only versions 7 and up carry it.
_QR_VERSION_GENERATOR = 0x1F25
_QR_VERSION_ECC_BITS = 12
_QR_VERSION_TOTAL_BITS = 18
_QR_VERSION_INFO_MIN_VERSION = 7

# 6.3.3 finder pattern (7x7) plus its 1-module separator (6.3.4); 6.3.6 alignment (5x5).
_QR_FINDER_RADIUS = 3          # centre to outer dark ring
_QR_SEPARATOR_RADIUS = 4       # centre to the light separator ring
_QR_ALIGNMENT_RADIUS = 2
_QR_TIMING_INDEX = 6           # row 6 and column 6 hold the timing patterns

# 7.8.3.1 Table 11: penalty weights of the mask evaluation.
_QR_PENALTY_N1 = 3    # run of >= 5 same-colour modules in a row/column: N1 + (run - 5)
_QR_PENALTY_N2 = 3    # each 2x2 block of one colour
_QR_PENALTY_N3 = 40   # 1:1:3:1:1 finder-like pattern with 4 light modules on a side
_QR_PENALTY_N4 = 10   # each full 5 % the dark proportion deviates from 50 %
_QR_N1_MIN_RUN = 5
_QR_N3_PATTERN = bytes((1, 0, 1, 1, 1, 0, 1))
_QR_N3_LIGHT_RUN = 4
_QR_N1_RUN_RE = re.compile(rb"\x00{%d,}|\x01{%d,}" % (_QR_N1_MIN_RUN, _QR_N1_MIN_RUN))

# 7.8.2 Table 10: data mask conditions; i = row, j = column. Where the condition
# is true the module is inverted.
_QR_MASK_CONDITIONS = (
    lambda i, j: (i + j) % 2 == 0,
    lambda i, j: i % 2 == 0,
    lambda i, j: j % 3 == 0,
    lambda i, j: (i + j) % 3 == 0,
    lambda i, j: (i // 2 + j // 3) % 2 == 0,
    lambda i, j: (i * j) % 2 + (i * j) % 3 == 0,
    lambda i, j: ((i * j) % 2 + (i * j) % 3) % 2 == 0,
    lambda i, j: ((i + j) % 2 + (i * j) % 3) % 2 == 0,
)
assert len(_QR_MASK_CONDITIONS) == _QR_NUM_MASKS

# Table 9 (the only irregular data in the spec, so the only tables here).
# Row = error correction level, column = version (index 0 unused).
#                     Version: (pad) 1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40
_QR_ECC_CODEWORDS_PER_BLOCK = {
    "L": (None,  7, 10, 15, 20, 26, 18, 20, 24, 30, 18, 20, 24, 26, 30, 22, 24, 28, 30, 28, 28, 28, 28, 30, 30, 26, 28, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30),
    "M": (None, 10, 16, 26, 18, 24, 16, 18, 22, 22, 26, 30, 22, 22, 24, 24, 28, 28, 26, 26, 26, 26, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28),
    "Q": (None, 13, 22, 18, 26, 18, 24, 18, 22, 20, 24, 28, 26, 24, 20, 30, 24, 28, 28, 26, 30, 28, 30, 30, 30, 30, 28, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30),
    "H": (None, 17, 28, 22, 16, 22, 28, 26, 26, 24, 28, 24, 28, 22, 24, 24, 30, 28, 28, 26, 28, 30, 24, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30),
}
_QR_NUM_ERROR_CORRECTION_BLOCKS = {
    "L": (None,  1,  1,  1,  1,  1,  2,  2,  2,  2,  4,  4,  4,  4,  4,  6,  6,  6,  6,  7,  8,  8,  9,  9, 10, 12, 12, 12, 13, 14, 15, 16, 17, 18, 19, 19, 20, 21, 22, 24, 25),
    "M": (None,  1,  1,  1,  2,  2,  4,  4,  4,  5,  5,  5,  8,  9,  9, 10, 10, 11, 13, 14, 16, 17, 17, 18, 20, 21, 23, 25, 26, 28, 29, 31, 33, 35, 37, 38, 40, 43, 45, 47, 49),
    "Q": (None,  1,  1,  2,  2,  4,  4,  6,  6,  8,  8,  8, 10, 12, 16, 12, 17, 16, 18, 21, 20, 23, 23, 25, 27, 29, 34, 34, 35, 38, 40, 43, 45, 48, 51, 53, 56, 59, 62, 65, 68),
    "H": (None,  1,  1,  2,  4,  4,  4,  5,  6,  8,  8, 11, 11, 16, 16, 18, 16, 19, 21, 25, 25, 25, 34, 30, 32, 35, 37, 40, 42, 45, 48, 51, 54, 57, 60, 63, 66, 70, 74, 77, 81),
}


# -- Public entry point --------------------------------------------------------

def qr_encode(data, ec="M", version=None, mask=None):
    """Encode `data` (bytes, or str taken as UTF-8) as a QR Code in byte mode.

    ec: "L", "M", "Q" or "H". version: None picks the smallest version (1-40)
    that holds the data at that level; an int forces it. mask: None tries all
    eight and keeps the lowest penalty; an int 0-7 forces it.
    Raises QrDataTooLong (a ValueError) when the data does not fit, ValueError
    for a bad ec/version/mask, TypeError for data that is not bytes or str.
    """
    payload = _qr_payload_bytes(data)
    _qr_check_encode_args(ec, version, mask)
    chosen = _qr_choose_version(len(payload), ec, version)
    codewords = _qr_data_codewords(payload, chosen, ec)
    return QrCode(chosen, ec, codewords, mask)


def _qr_payload_bytes(data):
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"QR data must be bytes or str, not {type(data).__name__}")


def _qr_check_encode_args(ec, version, mask):
    if ec not in _QR_EC_LEVELS:
        raise ValueError(f"QR error correction level must be one of {_QR_EC_LEVELS}, not {ec!r}")
    if version is not None and not _qr_is_int_in(version, _QR_MIN_VERSION, _QR_MAX_VERSION):
        raise ValueError(f"QR version must be {_QR_MIN_VERSION}-{_QR_MAX_VERSION} or None, not {version!r}")
    if mask is not None and not _qr_is_int_in(mask, 0, _QR_NUM_MASKS - 1):
        raise ValueError(f"QR mask must be 0-{_QR_NUM_MASKS - 1} or None, not {mask!r}")


def _qr_is_int_in(value, low, high):
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


# -- Capacity: how many bytes fit -----------------------------------------------

def _qr_num_raw_data_modules(version):
    """Modules left for data + ECC codewords (incl. remainder bits) once the
    function patterns, format and version information are taken out."""
    size = _qr_size(version)
    # Finders with separators: three 8x8 squares (the separator is clipped by the edge).
    result = size * size - 3 * (_QR_SEPARATOR_RADIUS * 2) ** 2
    # Timing patterns: row 6 and column 6 between the separators.
    result -= 2 * (size - 16)
    # Format information: 2 x 15 modules, plus the dark module.
    result -= 2 * _QR_FORMAT_TOTAL_BITS + 1
    num_align = len(_qr_alignment_positions(version))
    if num_align:
        alignment_patterns = num_align * num_align - 3
        result -= alignment_patterns * 25
        # Alignment patterns on row/column 6 overlap the timing pattern by 5 modules.
        result += 2 * (num_align - 2) * 5
    if version >= _QR_VERSION_INFO_MIN_VERSION:
        result -= 2 * _QR_VERSION_TOTAL_BITS
    return result


def _qr_size(version):
    # 6.1: "Version 1 measures 21 modules x 21 modules, Version 2 measures 25 x 25
    # modules and so on increasing in steps of 4 modules per side"
    return 4 * version + 17


def _qr_num_data_codewords(version, ec):
    raw_codewords = _qr_num_raw_data_modules(version) // 8
    ecc = _QR_ECC_CODEWORDS_PER_BLOCK[ec][version] * _QR_NUM_ERROR_CORRECTION_BLOCKS[ec][version]
    return raw_codewords - ecc


def _qr_byte_count_bits(version):
    if version <= _QR_SMALL_VERSION_LAST:
        return _QR_BYTE_COUNT_BITS_SMALL
    return _QR_BYTE_COUNT_BITS_LARGE


def _qr_max_bytes(version, ec):
    """Largest byte-mode payload of a version/level (Table 7, "Byte" column)."""
    header_bits = _QR_MODE_INDICATOR_BITS + _qr_byte_count_bits(version)
    return (_qr_num_data_codewords(version, ec) * 8 - header_bits) // 8


def _qr_choose_version(num_bytes, ec, forced_version):
    if forced_version is not None:
        capacity = _qr_max_bytes(forced_version, ec)
        if num_bytes > capacity:
            raise QrDataTooLong(f"QR data is {num_bytes} bytes; version {forced_version}-{ec} holds at most {capacity}")
        return forced_version
    for version in range(_QR_MIN_VERSION, _QR_MAX_VERSION + 1):
        if num_bytes <= _qr_max_bytes(version, ec):
            return version
    capacity = _qr_max_bytes(_QR_MAX_VERSION, ec)
    raise QrDataTooLong(f"QR data is {num_bytes} bytes; level {ec} holds at most {capacity}")


# -- Steps 1-2: bit stream and data codewords -------------------------------------

class _QrBitBuffer:
    """A growing sequence of bits, most significant bit of each field first."""

    def __init__(self):
        self.bits = []

    def __len__(self):
        return len(self.bits)

    def append(self, value, length):
        assert length >= 0 and value >> length == 0, "value does not fit in length bits"
        self.bits.extend((value >> shift) & 1 for shift in range(length - 1, -1, -1))

    def to_bytes(self):
        assert len(self.bits) % 8 == 0
        out = bytearray()
        for start in range(0, len(self.bits), 8):
            byte = 0
            for bit in self.bits[start:start + 8]:
                byte = (byte << 1) | bit
            out.append(byte)
        return bytes(out)


def _qr_data_codewords(payload, version, ec):
    """Byte-mode segment + terminator + padding = exactly the data codewords."""
    capacity_bits = _qr_num_data_codewords(version, ec) * 8
    buf = _QrBitBuffer()
    buf.append(_QR_MODE_BYTE, _QR_MODE_INDICATOR_BITS)
    buf.append(len(payload), _qr_byte_count_bits(version))
    for byte in payload:
        buf.append(byte, 8)
    assert len(buf) <= capacity_bits, "caller checked the capacity"
    buf.append(0, min(_QR_TERMINATOR_BITS, capacity_bits - len(buf)))
    buf.append(0, -len(buf) % 8)  # 7.4.10: zero bits up to the codeword boundary
    codewords = bytearray(buf.to_bytes())
    pad_index = 0
    while len(codewords) < capacity_bits // 8:
        codewords.append(_QR_PAD_CODEWORDS[pad_index % 2])
        pad_index += 1
    assert len(codewords) * 8 == capacity_bits
    return bytes(codewords)


# -- Step 3: Reed-Solomon error correction over GF(256) ----------------------------

def _qr_build_gf_tables():
    """exp[i] = alpha^i (doubled in length so products need no modulo) and log."""
    exp = [0] * 512
    log = [0] * 256
    value = 1
    for power in range(255):
        exp[power] = value
        log[value] = power
        value <<= 1
        if value & 0x100:
            value ^= _QR_GF_PRIME_POLY
    for power in range(255, 512):
        exp[power] = exp[power - 255]
    return exp, log


_QR_GF_EXP, _QR_GF_LOG = _qr_build_gf_tables()


def _qr_gf_multiply(a, b):
    if a == 0 or b == 0:
        return 0
    return _QR_GF_EXP[_QR_GF_LOG[a] + _QR_GF_LOG[b]]


def _qr_rs_generator(degree):
    """Coefficients of prod_{i<degree} (x - alpha^i), highest power first,
    without the leading 1 (the polynomial is monic)."""
    poly = [1]
    for i in range(degree):
        root = _QR_GF_EXP[i]
        # Multiply poly by (x + root): shift up one power, add root * poly.
        product = poly + [0]
        for k, coefficient in enumerate(poly):
            product[k + 1] ^= _qr_gf_multiply(coefficient, root)
        poly = product
    assert len(poly) == degree + 1 and poly[0] == 1
    return poly[1:]


def _qr_rs_remainder(data, generator):
    """ECC codewords: remainder of data(x) * x^n divided by the generator (7.5.2)."""
    remainder = [0] * len(generator)
    for byte in data:
        factor = byte ^ remainder[0]
        remainder = remainder[1:] + [0]
        if factor:
            log_factor = _QR_GF_LOG[factor]
            for k, coefficient in enumerate(generator):
                if coefficient:
                    remainder[k] ^= _QR_GF_EXP[_QR_GF_LOG[coefficient] + log_factor]
    return bytes(remainder)


# -- Step 4: blocks and interleaving ----------------------------------------------

def _qr_interleave_blocks(data, version, ec):
    """Split the data codewords into blocks, add each block's ECC, interleave (7.6).

    Table 9 gives the block count; "short" blocks come first and the rest hold
    one more data codeword. The final sequence takes codeword 1 of every block,
    then codeword 2 and so on, then the ECC codewords the same way.
    """
    num_blocks = _QR_NUM_ERROR_CORRECTION_BLOCKS[ec][version]
    ecc_len = _QR_ECC_CODEWORDS_PER_BLOCK[ec][version]
    raw_codewords = _qr_num_raw_data_modules(version) // 8
    assert len(data) == _qr_num_data_codewords(version, ec)
    num_long = raw_codewords % num_blocks
    short_data_len = raw_codewords // num_blocks - ecc_len
    generator = _qr_rs_generator(ecc_len)
    data_blocks, ecc_blocks = [], []
    start = 0
    for index in range(num_blocks):
        length = short_data_len + (1 if index >= num_blocks - num_long else 0)
        block = data[start:start + length]
        start += length
        data_blocks.append(block)
        ecc_blocks.append(_qr_rs_remainder(block, generator))
    assert start == len(data)
    result = bytearray()
    for position in range(short_data_len + 1):
        for block in data_blocks:
            if position < len(block):
                result.append(block[position])
    for position in range(ecc_len):
        for block in ecc_blocks:
            result.append(block[position])
    assert len(result) == raw_codewords
    return bytes(result)


# -- Function pattern geometry -------------------------------------------------------

def _qr_alignment_positions(version):
    """Row/column centres of the alignment patterns (Annex E), computed.

    The first centre is 6, the last is size - 7, and the others are spaced
    evenly by an even step counted back from the last; any leftover goes into
    the first gap. Version 1 has none.
    """
    if version == 1:
        return []
    count = version // 7 + 2
    # Even step, rounded so that e.g. version 32 gets 26 (not 28).
    step = (version * 8 + count * 3 + 5) // (count * 4 - 4) * 2
    last = _qr_size(version) - 7
    positions = [last - step * k for k in range(count - 1)] + [_QR_TIMING_INDEX]
    return sorted(positions)


def _qr_format_bits(ec, mask):
    """15-bit format information for a level and mask (7.9.1), bit 14 first."""
    data = (_QR_EC_FORMAT_BITS[ec] << 3) | mask
    bits = (data << _QR_FORMAT_ECC_BITS) | _qr_bch_remainder(data, _QR_FORMAT_GENERATOR, _QR_FORMAT_ECC_BITS)
    bits ^= _QR_FORMAT_XOR_MASK
    assert bits >> _QR_FORMAT_TOTAL_BITS == 0
    return bits


def _qr_version_bits(version):
    """18-bit version information (7.10): 6 bits of version, 12 of BCH ECC."""
    bits = (version << _QR_VERSION_ECC_BITS) | _qr_bch_remainder(version, _QR_VERSION_GENERATOR, _QR_VERSION_ECC_BITS)
    assert bits >> _QR_VERSION_TOTAL_BITS == 0
    return bits


def _qr_bch_remainder(data, generator, ecc_bits):
    """Remainder of data(x) * x^ecc_bits divided by generator(x), over GF(2)."""
    remainder = data << ecc_bits
    for shift in range(remainder.bit_length() - 1, ecc_bits - 1, -1):
        if (remainder >> shift) & 1:
            remainder ^= generator << (shift - ecc_bits)
    assert remainder >> ecc_bits == 0
    return remainder


def _qr_format_positions(size):
    """(row, col) of format bits 0..14, for the copy around the top-left finder
    and for the copy split between the top-right and bottom-left finders
    (Figure 25). Row 6 / column 6 are skipped: that is the timing pattern."""
    near_top_left = ([(row, 8) for row in range(0, 6)] + [(7, 8), (8, 8), (8, 7)]
                     + [(8, col) for col in range(5, -1, -1)])
    split = ([(8, size - 1 - k) for k in range(8)]
             + [(size - 7 + k, 8) for k in range(7)])
    return near_top_left, split


def _qr_dark_module_position(size):
    # 7.9.1: "The module at position (4V + 9, 8) shall always be dark and does
    # not form part of the format information."
    return size - 8, 8


def _qr_version_positions(size):
    """(row, col) pairs of version bits 0..17, for the block above the
    bottom-left finder and the block left of the top-right finder (Figure 27)."""
    bottom_left = [(size - 11 + k % 3, k // 3) for k in range(_QR_VERSION_TOTAL_BITS)]
    top_right = [(col, row) for row, col in bottom_left]
    return bottom_left, top_right


# -- The symbol ---------------------------------------------------------------------------

class QrCode:
    """A finished QR Code symbol.

    Fields: version (1-40), ec ("L"/"M"/"Q"/"H"), mask (0-7), size (modules
    per side), modules (size rows of size bools, True = dark, no quiet zone).
    Build one with qr_encode(); the constructor takes the data codewords.
    """

    def __init__(self, version, ec, data_codewords, mask=None):
        self.version = version
        self.ec = ec
        self.size = _qr_size(version)
        size = self.size
        # Working matrices: bytearrays of 0/1 (fast to copy and search).
        self._grid = [bytearray(size) for _ in range(size)]
        self._is_function = [bytearray(size) for _ in range(size)]

        self._draw_function_patterns()
        self._reserve_format_and_version_areas()
        self._draw_codewords(_qr_interleave_blocks(data_codewords, version, ec))
        if mask is None:
            mask = self._choose_mask()
        self._grid = self._masked_grid(mask)
        self.mask = mask
        self._draw_format_bits()
        self._draw_version_bits()

        self.modules = [[bool(cell) for cell in row] for row in self._grid]
        del self._grid, self._is_function, self._data_positions
        assert len(self.modules) == size and all(len(row) == size for row in self.modules)
        assert 0 <= self.mask < _QR_NUM_MASKS

    def __repr__(self):
        return f"QrCode(version={self.version}, ec={self.ec!r}, mask={self.mask}, size={self.size})"

    def is_dark(self, row, col):
        """Module colour; outside the symbol (the quiet zone) is light."""
        return 0 <= row < self.size and 0 <= col < self.size and self.modules[row][col]

    # -- step 5: function patterns (6.3) --

    def _set_function(self, row, col, dark):
        self._grid[row][col] = 1 if dark else 0
        self._is_function[row][col] = 1

    def _draw_function_patterns(self):
        size = self.size
        # 6.3.5: "alternating dark and light modules, commencing and ending
        # with a dark module" on row 6 and column 6.
        for k in range(size):
            self._set_function(_QR_TIMING_INDEX, k, k % 2 == 0)
            self._set_function(k, _QR_TIMING_INDEX, k % 2 == 0)
        centre_far = size - 1 - _QR_FINDER_RADIUS
        for row, col in ((_QR_FINDER_RADIUS, _QR_FINDER_RADIUS),
                         (_QR_FINDER_RADIUS, centre_far),
                         (centre_far, _QR_FINDER_RADIUS)):
            self._draw_finder(row, col)
        positions = _qr_alignment_positions(self.version)
        corners = {(positions[0], positions[0]), (positions[0], positions[-1]),
                   (positions[-1], positions[0])} if positions else set()
        for row in positions:
            for col in positions:
                if (row, col) not in corners:  # those spots belong to the finders
                    self._draw_alignment(row, col)

    def _draw_finder(self, centre_row, centre_col):
        # Concentric squares by Chebyshev distance: 0-1 dark core (3x3),
        # 2 light, 3 dark ring, 4 the light separator (clipped at the edges).
        for dr in range(-_QR_SEPARATOR_RADIUS, _QR_SEPARATOR_RADIUS + 1):
            for dc in range(-_QR_SEPARATOR_RADIUS, _QR_SEPARATOR_RADIUS + 1):
                row, col = centre_row + dr, centre_col + dc
                if 0 <= row < self.size and 0 <= col < self.size:
                    self._set_function(row, col, max(abs(dr), abs(dc)) not in (2, _QR_SEPARATOR_RADIUS))

    def _draw_alignment(self, centre_row, centre_col):
        # Dark 5x5 ring, light 3x3 ring, dark centre.
        for dr in range(-_QR_ALIGNMENT_RADIUS, _QR_ALIGNMENT_RADIUS + 1):
            for dc in range(-_QR_ALIGNMENT_RADIUS, _QR_ALIGNMENT_RADIUS + 1):
                self._set_function(centre_row + dr, centre_col + dc, max(abs(dr), abs(dc)) != 1)

    def _reserve_format_and_version_areas(self):
        """Mark them as function modules, light for now: they are drawn in
        step 7, after the mask has been chosen (ISO 18004 clause 7.1 orders
        masking as step 6 and format/version information as step 7). So the
        mask evaluation sees these areas, and the dark module, as light; this
        is also what segno does, which lets tests compare the automatic choice."""
        near_top_left, split = _qr_format_positions(self.size)
        positions = near_top_left + split + [_qr_dark_module_position(self.size)]
        if self.version >= _QR_VERSION_INFO_MIN_VERSION:
            bottom_left, top_right = _qr_version_positions(self.size)
            positions += bottom_left + top_right
        for row, col in positions:
            self._set_function(row, col, False)

    # -- step 5: codeword placement (7.7.3) --

    def _draw_codewords(self, codewords):
        """Place the bits in two-module-wide columns, zigzagging up and down
        from the right edge, skipping function modules; column 6 (vertical
        timing) is skipped as a whole. Unfilled modules are remainder bits (0)."""
        size = self.size
        total_bits = len(codewords) * 8
        index = 0
        pair_rights = list(range(size - 1, _QR_TIMING_INDEX, -2)) + list(range(_QR_TIMING_INDEX - 1, 0, -2))
        data_positions = []
        for pair_number, right in enumerate(pair_rights):
            upward = pair_number % 2 == 0
            rows = range(size - 1, -1, -1) if upward else range(size)
            for row in rows:
                for col in (right, right - 1):
                    if self._is_function[row][col]:
                        continue
                    data_positions.append((row, col))
                    if index < total_bits:
                        self._grid[row][col] = (codewords[index >> 3] >> (7 - (index & 7))) & 1
                        index += 1
        assert index == total_bits, "all codewords placed"
        remainder_bits = len(data_positions) - total_bits
        assert len(data_positions) == _qr_num_raw_data_modules(self.version)
        assert 0 <= remainder_bits < 8
        self._data_positions = data_positions

    # -- step 6: masking (7.8) --

    def _masked_grid(self, mask):
        condition = _QR_MASK_CONDITIONS[mask]
        grid = [bytearray(row) for row in self._grid]
        for row, col in self._data_positions:
            if condition(row, col):
                grid[row][col] ^= 1
        return grid

    def _choose_mask(self):
        # 7.8.3.1: "The data mask pattern which results in the lowest penalty
        # score shall be selected"; ties keep the lowest mask number.
        scores = [_qr_penalty_score(self._masked_grid(mask)) for mask in range(_QR_NUM_MASKS)]
        return scores.index(min(scores))

    # -- step 7: format and version information (7.9, 7.10) --

    def _draw_format_bits(self):
        bits = _qr_format_bits(self.ec, self.mask)
        for positions in _qr_format_positions(self.size):
            for bit_index, (row, col) in enumerate(positions):
                self._set_function(row, col, (bits >> bit_index) & 1)
        self._set_function(*_qr_dark_module_position(self.size), True)

    def _draw_version_bits(self):
        if self.version < _QR_VERSION_INFO_MIN_VERSION:
            return
        bits = _qr_version_bits(self.version)
        for positions in _qr_version_positions(self.size):
            for bit_index, (row, col) in enumerate(positions):
                self._set_function(row, col, (bits >> bit_index) & 1)


# -- Mask penalty (7.8.3.1, Table 11) -------------------------------------------------

def _qr_penalty_score(grid):
    """Total penalty N1 + N2 + N3 + N4 of a masked matrix (rows of 0/1)."""
    rows = [bytes(row) for row in grid]
    columns = [bytes(column) for column in zip(*rows)]
    score = 0
    for line in rows + columns:
        score += _qr_run_penalty(line) + _qr_finder_like_penalty(line)
    score += _qr_block_penalty(rows)
    score += _qr_balance_penalty(rows)
    return score


def _qr_run_penalty(line):
    """N1: "Adjacent modules in row/column in same color, No. of modules = (5 + i):
    N1 + i"."""
    return sum(_QR_PENALTY_N1 + (match.end() - match.start() - _QR_N1_MIN_RUN)
               for match in _QR_N1_RUN_RE.finditer(line))


def _qr_block_penalty(rows):
    """N2: "Block of modules in same color, block size = m x n: N2 x (m-1) x (n-1)",
    counted (as usual) as N2 for every 2x2 square of one colour."""
    count = 0
    for upper, lower in zip(rows, rows[1:]):
        for a, b, c, d in zip(upper, upper[1:], lower, lower[1:]):
            if a == b == c == d:
                count += 1
    return _QR_PENALTY_N2 * count


def _qr_finder_like_penalty(line):
    """N3: "1:1:3:1:1 ratio (dark:light:dark:light:dark) pattern in row/column,
    preceded or followed by light area 4 modules wide".

    Read with module width 1, the light area may lie partly beyond the symbol
    (the quiet zone is light), and each pattern counts once. A match is
    searched again from its end; this is segno's reading of the rule too."""
    score = 0
    start = line.find(_QR_N3_PATTERN)
    while start != -1:
        end = start + len(_QR_N3_PATTERN)
        light_before = not any(line[max(start - _QR_N3_LIGHT_RUN, 0):start])
        light_after = not any(line[end:end + _QR_N3_LIGHT_RUN])
        if light_before or light_after:
            score += _QR_PENALTY_N3
            start = line.find(_QR_N3_PATTERN, end)
        else:
            start = line.find(_QR_N3_PATTERN, start + 1)
    return score


def _qr_balance_penalty(rows):
    """N4: "Proportion of dark modules in entire symbol, 50 +/- (5 x k)% to
    50 +/- (5 x (k + 1))%: N4 x k". k = floor(|dark% - 50| / 5), in integers."""
    total = len(rows) * len(rows)
    dark = sum(sum(row) for row in rows)
    k = abs(20 * dark - 10 * total) // total
    return _QR_PENALTY_N4 * k


###############################################################################
# QR Code renderers: console, SVG, PNG ########################################
###############################################################################

_QR_DEFAULT_QUIET_ZONE = 4      # 6.3.8: "The quiet zone shall be 4X wide"
_QR_DEFAULT_SCALE = 8           # pixels per module for SVG/PNG
_QR_MAX_SCALE = 64              # keeps a version-40 PNG under ~12k x 12k pixels
_QR_MAX_QUIET_ZONE = 64

# Console output, which colour is which:
# A terminal draws a character cell in two colours: the glyph ("ink") in the
# foreground colour, the rest in the background colour. We print the LIGHT
# modules as ink (block characters) and leave DARK modules as blank cells, so
# the dark modules take the terminal background. Console defaults are light
# text on a dark background (cmd.exe, PowerShell, most Linux/macOS themes), and
# there this gives the dark-on-light symbol scanners expect, with the quiet zone
# printed as a light frame. (qrencode -t UTF8 makes the same choice.)
# A light-theme terminal would show the plain text inverted; ansi=True pins
# both colours with SGR codes (bright-white ink on black background), so the
# very same characters come out dark-on-light in ANY theme. Plain text stays
# the default because consoles that do not interpret escape codes (legacy
# Windows conhost, redirected output) would print them literally.
_QR_BLOCK_FULL = "\u2588"     # FULL BLOCK: both half-rows light
_QR_BLOCK_UPPER = "\u2580"    # UPPER HALF BLOCK: top light, bottom dark
_QR_BLOCK_LOWER = "\u2584"    # LOWER HALF BLOCK: top dark, bottom light
_QR_BLOCK_NONE = " "          # both dark
_QR_CONSOLE_CHARS = _QR_BLOCK_FULL + _QR_BLOCK_UPPER + _QR_BLOCK_LOWER + _QR_BLOCK_NONE
# One text row per module row, two characters per module: a character cell is
# about twice as tall as wide, so "##" is close to square. Same polarity as above.
_QR_ASCII_LIGHT = "##"
_QR_ASCII_DARK = "  "
_QR_ANSI_LIGHT_ON_DARK = "\x1b[97;40m"   # bright white foreground, black background
_QR_ANSI_RESET = "\x1b[0m"


def qr_render_console(qr, quiet=_QR_DEFAULT_QUIET_ZONE, ascii_only=False, ansi=False):
    """Text drawing of the symbol with a quiet zone, lines joined by "\\n".

    Default: Unicode half blocks, two module rows per text line. ascii_only:
    "##"/"  " per module, one line per module row, for streams that cannot
    encode the blocks (see qr_console_can_encode). ansi: wrap each line in
    colour codes so it reads dark-on-light in light and dark themes alike.
    """
    _qr_check_quiet(quiet)
    light_rows = _qr_light_rows(qr, quiet)
    if ascii_only:
        lines = ["".join(_QR_ASCII_LIGHT if light else _QR_ASCII_DARK for light in row)
                 for row in light_rows]
    else:
        if len(light_rows) % 2:
            # Pad the last half-line with light: it only extends the quiet zone.
            light_rows.append([True] * len(light_rows[0]))
        lines = ["".join(_qr_half_block(top, bottom) for top, bottom in zip(upper, lower))
                 for upper, lower in zip(light_rows[0::2], light_rows[1::2])]
    if ansi:
        lines = [_QR_ANSI_LIGHT_ON_DARK + line + _QR_ANSI_RESET for line in lines]
    return "\n".join(lines)


def _qr_half_block(top_light, bottom_light):
    if top_light:
        return _QR_BLOCK_FULL if bottom_light else _QR_BLOCK_UPPER
    return _QR_BLOCK_LOWER if bottom_light else _QR_BLOCK_NONE


def _qr_light_rows(qr, quiet):
    """Rows of booleans, True = light, the quiet zone included."""
    span = range(-quiet, qr.size + quiet)
    return [[not qr.is_dark(row, col) for col in span] for row in span]


def qr_console_can_encode(stream):
    """True when stream.encoding can encode the block characters the Unicode
    console drawing uses (UTF-8 and cp437 can; cp1252, latin-1 and ASCII cannot)."""
    encoding = getattr(stream, "encoding", None)
    if not encoding:
        return False
    try:
        _QR_CONSOLE_CHARS.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def qr_render_svg(qr, scale=_QR_DEFAULT_SCALE, quiet=_QR_DEFAULT_QUIET_ZONE):
    """Standalone SVG: white background rect, dark modules as ONE <path> made of
    one rectangle per horizontal run, in module units (viewBox), crispEdges so
    viewers do not anti-alias module edges into grey seams."""
    _qr_check_scale(scale)
    _qr_check_quiet(quiet)
    side = qr.size + 2 * quiet
    parts = []
    for row in range(qr.size):
        col = 0
        while col < qr.size:
            if not qr.modules[row][col]:
                col += 1
                continue
            run_start = col
            while col < qr.size and qr.modules[row][col]:
                col += 1
            run = col - run_start
            parts.append(f"M{run_start + quiet},{row + quiet}h{run}v1h-{run}z")
    pixels = side * scale
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{pixels}" height="{pixels}" '
        f'viewBox="0 0 {side} {side}" shape-rendering="crispEdges">\n'
        f'<rect x="0" y="0" width="{side}" height="{side}" fill="#ffffff"/>\n'
        f'<path fill="#000000" d="{"".join(parts)}"/>\n'
        '</svg>\n'
    )


_QR_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_QR_PNG_BIT_DEPTH = 1
_QR_PNG_COLOR_GRAYSCALE = 0
_QR_PNG_FILTER_NONE = 0
_QR_PNG_ZLIB_LEVEL = 9


def qr_render_png(qr, scale=_QR_DEFAULT_SCALE, quiet=_QR_DEFAULT_QUIET_ZONE):
    """PNG bytes: 1-bit grayscale (0 = black = dark module), no interlace."""
    _qr_check_scale(scale)
    _qr_check_quiet(quiet)
    side = (qr.size + 2 * quiet) * scale
    raw = bytearray()
    for light_row in _qr_light_rows(qr, quiet):
        bits = "".join(("1" if light else "0") * scale for light in light_row)
        bits += "0" * (-len(bits) % 8)  # pad the scanline to whole bytes
        scanline = bytes([_QR_PNG_FILTER_NONE]) + int(bits, 2).to_bytes(len(bits) // 8, "big")
        raw += scanline * scale
    header = struct.pack(">IIBBBBB", side, side, _QR_PNG_BIT_DEPTH, _QR_PNG_COLOR_GRAYSCALE, 0, 0, 0)
    return (_QR_PNG_SIGNATURE
            + _qr_png_chunk(b"IHDR", header)
            + _qr_png_chunk(b"IDAT", zlib.compress(bytes(raw), _QR_PNG_ZLIB_LEVEL))
            + _qr_png_chunk(b"IEND", b""))


def _qr_png_chunk(kind, payload):
    # PNG chunk: length, type, data, CRC-32 over type + data.
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", binascii.crc32(kind + payload) & 0xFFFFFFFF))


def _qr_check_scale(scale):
    if not _qr_is_int_in(scale, 1, _QR_MAX_SCALE):
        raise ValueError(f"QR scale must be an int 1-{_QR_MAX_SCALE}, not {scale!r}")


def _qr_check_quiet(quiet):
    if not _qr_is_int_in(quiet, 0, _QR_MAX_QUIET_ZONE):
        raise ValueError(f"QR quiet zone must be an int 0-{_QR_MAX_QUIET_ZONE}, not {quiet!r}")
