"""kallsyms recovery on synthetic tables laid out like each kernel generation."""

import random
import struct

import pytest

from vmroc.introspect.errors import KallsymsError, KernelImageError
from vmroc.introspect.kallsyms import parse_kallsyms
from vmroc.introspect.kernel_image import extract_vmlinux

TEXT = 0xFFFFFFFF81000000


def make_symbols(n=700, seed=1):
    """(names, types, addresses): per-CPU 'A' symbols first, then text/data, sorted."""
    rng = random.Random(seed)
    syms = [("fixed_percpu_data", "A", 0), ("runqueues", "A", 0x2F280)]
    addr = TEXT
    syms.append(("_text", "T", addr))
    words = ["do", "sys", "read", "write", "task", "net", "dev", "init", "irq", "page",
             "0123456789", "x86", "v4l2", "ZONE", "Q"]
    for i in range(n - len(syms)):
        addr += rng.randrange(0, 400)
        name = "_".join(rng.choice(words) for _ in range(rng.randrange(1, 4))) + f"_{i}"
        syms.append((name, rng.choice("TtDdBbRr"), addr))
    return [s[0] for s in syms], "".join(s[1] for s in syms), [s[2] for s in syms]


def encode(names, types):
    """Token table + compressed names, the scheme of scripts/kallsyms.c (greedy pairs)."""
    raw = [t + n for n, t in zip(names, types)]
    used = sorted({c for r in raw for c in r})
    tokens = [None] * 256
    for c in used:
        tokens[ord(c)] = c
    pairs = {}
    for r in raw:
        for a, b in zip(r, r[1:]):
            pairs[a + b] = pairs.get(a + b, 0) + 1
    best = iter(sorted(pairs, key=lambda p: -pairs[p]))
    for i in range(256):
        if tokens[i] is None:
            tokens[i] = next(best)
    lookup = {t: i for i, t in enumerate(tokens)}
    entries = []
    for r in raw:
        out, i = [], 0
        while i < len(r):
            if r[i:i + 2] in lookup and len(r[i:i + 2]) == 2:
                out.append(lookup[r[i:i + 2]])
                i += 2
            else:
                out.append(lookup[r[i]])
                i += 1
        entries.append(bytes(out))
    return tokens, entries


def align(buf, n=8):
    return buf + b"\0" * (-len(buf) % n)


def build_blob(layout, n=700, junk=4096):
    names, types, addrs = make_symbols(n)
    tokens, entries = encode(names, types)
    names_tab, markers = b"", []
    for i, e in enumerate(entries):
        if i % 256 == 0:
            markers.append(len(names_tab))
        names_tab += bytes([len(e)]) + e
    token_table, token_index = b"", []
    for t in tokens:
        token_index.append(len(token_table))
        token_table += t.encode() + b"\0"
    rb = TEXT
    offsets = [a if a < TEXT else rb - 1 - a for a in addrs]
    t_offsets = struct.pack(f"<{n}i", *offsets)
    t_num = struct.pack("<I", n)
    t_markers = struct.pack(f"<{len(markers)}I", *markers)
    t_seqs = b"".join((i).to_bytes(3, "big") for i in sorted(range(n), key=lambda i: names[i]))
    t_index = struct.pack("<256H", *token_index)
    rng = random.Random(7)
    blob = align(bytes(rng.randrange(256) for _ in range(junk)))
    if layout == "5.x":        # offsets, relative_base, num_syms, names, markers, tokens
        parts = [t_offsets, struct.pack("<Q", rb), t_num, names_tab, t_markers,
                 token_table, t_index]
    elif layout == "6.1.19x":  # ... markers, seqs_of_names, tokens
        parts = [t_offsets, struct.pack("<Q", rb), t_num, names_tab, t_markers, t_seqs,
                 token_table, t_index]
    elif layout == "6.4+":     # num_syms, names, markers, seqs, tokens, offsets, relative_base
        parts = [t_num, names_tab, t_markers, t_seqs, token_table, t_index, t_offsets,
                 struct.pack("<Q", rb)]
    for p in parts:
        blob = align(blob + p)
    blob += bytes(rng.randrange(256) for _ in range(junk))
    return blob, names, types, addrs


@pytest.mark.parametrize("layout", ["5.x", "6.1.19x", "6.4+"])
def test_layouts_decode_exactly(layout):
    blob, names, types, addrs = build_blob(layout)
    ks = parse_kallsyms(blob)
    assert ks.names == names and ks.types == types and ks.addresses == addrs
    assert ks.layout.num_markers == 3
    if layout == "6.1.19x":
        assert ks.layout.seqs_gap >= 3 * len(names)  # the extra table was skipped, not assumed


def test_lookups_and_percpu():
    blob, names, _, _ = build_blob("6.1.19x")
    ks = parse_kallsyms(blob)
    assert ks.address("runqueues") == 0x2F280 and ks.is_percpu("runqueues")
    assert ks.address("_text") == TEXT and not ks.is_percpu("_text")
    assert ks.next_address(TEXT) > TEXT
    with pytest.raises(KallsymsError, match="nope"):
        ks.address("nope")


def test_random_bytes_are_rejected():
    rng = random.Random(3)
    with pytest.raises(KallsymsError):
        parse_kallsyms(bytes(rng.randrange(256) for _ in range(50000)))


def test_extract_rejects_non_kernels(tmp_path):
    bad = tmp_path / "x"
    bad.write_bytes(b"hello" * 200)
    with pytest.raises(KernelImageError, match="not a bzImage"):
        extract_vmlinux(bad)
    assert extract_vmlinux(b"\x7fELF" + b"\0" * 60) [:4] == b"\x7fELF"
