"""Hypothesis helpers for the codec fuzzers: build VALID input (frames, requests, WebSocket
frames), then mutate it a little, so that most examples get past the first parse and reach
the code behind it. Random bytes alone almost never do: 0 of 400 random-byte examples made a
frame, an HTTP event or a WebSocket event.

`mutated(valid)` draws (bytes, changes): the valid bytes with 0-3 byte-level changes, and
the names of the changes (empty: the input is still valid, so the test can check the exact
result). `Reach` counts the examples that produced something, for the tests' reach checks.
"""
import os

from hypothesis import strategies as st

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "400"))

# Values a length field or a counter is most likely to get wrong.
INTERESTING_UINT32 = [0, 1, 2, 7, 8, 125, 126, 127, 65535, 65536, 65537, 2 ** 20, 2 ** 20 + 1,
                      2 ** 24, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1]
GARBAGE = [b"\x00", b"\xff", b"\r\n", b"\n", b"\r", b" ", b":", b";", b"\x80", b"\xc3",
           b"\xed\xa0\x80", b'"', b"{", b"}", b"\\", b"%", b"0", b"-1", b"\t"]

CHANGES = ("flip_bit", "set_byte", "insert", "delete", "duplicate", "truncate", "uint32",
           "garbage_tail")


@st.composite
def mutated(draw, valid, max_changes=3, hotspots=None):
    """(bytes, changes): a draw of `valid` with 0..max_changes changes. `hotspots(data)`
    may name positions worth hitting (e.g. where length fields are)."""
    data = bytearray(draw(valid))
    changes = []
    for _ in range(draw(st.integers(0, max_changes))):
        kind = draw(st.sampled_from(CHANGES))
        spots = hotspots(bytes(data)) if hotspots and data else []
        position = draw(st.sampled_from(spots) if spots and draw(st.booleans()) else
                        st.integers(0, len(data)))
        if kind == "flip_bit" and position < len(data):
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set_byte" and position < len(data):
            data[position] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[position:position] = draw(st.sampled_from(GARBAGE) | st.binary(min_size=1,
                                                                                 max_size=8))
        elif kind == "delete":
            del data[position:position + draw(st.integers(1, 8))]
        elif kind == "duplicate":
            end = min(len(data), position + draw(st.integers(1, 64)))
            data[end:end] = data[position:end]
        elif kind == "truncate":
            del data[position:]
        elif kind == "uint32":
            value = draw(st.sampled_from(INTERESTING_UINT32) | st.integers(0, 2 ** 32 - 1))
            data[position:position + 4] = value.to_bytes(4, "big")
        elif kind == "garbage_tail":
            data += draw(st.binary(min_size=1, max_size=64))
        else:
            continue                  # a change that did not apply at this position
        changes.append(kind)
    return bytes(data), tuple(changes)


@st.composite
def split(draw, data):
    """`data` cut into pieces at 0-6 random places (a read may end anywhere)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


class Reach:
    """Share of fuzz examples that got past the first parse (produced a frame or event)."""

    def __init__(self, name):
        self.name = name
        self.examples = 0
        self.reached = 0

    def count(self, reached):
        self.examples += 1
        self.reached += bool(reached)

    @property
    def share(self):
        return self.reached / self.examples if self.examples else 0.0

    def __repr__(self):
        return "%s reach: %d of %d examples (%.0f %%)" % (self.name, self.reached,
                                                          self.examples, 100 * self.share)
