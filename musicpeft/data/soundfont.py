"""Repair a SoundFont 2 file so that symusic 0.5.8's synthesizer plays it in tune.

Why this exists: symusic renders with prestosynth, which (a) ignores the instrument generator
``overridingRootKey`` (58) and uses the sample header's ``originalPitch`` instead, (b) clamps the
sum of coarse and fine tuning to +-120 cents, so a ``coarseTune`` (51) of whole semitones is lost,
and (c) caches pitch-shifted samples under a key made of the played pitch and the sample's start
offset only, so two zones that share sample data but need different shifts overwrite each other.
``TimGM6mb.sf2`` sets ``overridingRootKey`` in 1,771 of its 2,063 instrument zones: the piano, the
strings and the shamisen come out several semitones off, note by note (measured: a piano A4 sounds
at ~1.66 kHz). Upstream: https://github.com/Yikai-Liao/symusic/issues/55 (open).

The repair rewrites the soundfont, not the audio: every instrument zone gets its own sample
header whose ``originalPitch`` is the zone's effective root key (override, minus coarse tune), the
two generators are neutralised, and zones whose sound differs from an earlier user of the same
sample data get a private copy of that data so the cache key cannot collide. Only the RIFF chunks
``sdta/smpl``, ``pdta/igen`` and ``pdta/shdr`` change; everything else is copied byte for byte.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

GEN_COARSE_TUNE = 51
GEN_SAMPLE_ID = 53
GEN_OVERRIDING_ROOT_KEY = 58
_SHDR = struct.Struct("<20sIIIIIBbHH")  # name, start, end, startloop, endloop, rate, pitch, corr, link, type
_IGEN = struct.Struct("<HH")
_IBAG = struct.Struct("<HH")
_INST = struct.Struct("<20sH")
_GUARD = 46  # SF2 asks for at least 46 zero data points after each sample


@dataclass
class _Chunk:
    """One RIFF chunk: a leaf with ``data`` or a LIST with ``children``."""

    cid: bytes
    data: bytes = b""
    list_type: bytes = b""
    children: list[_Chunk] | None = None

    def to_bytes(self) -> bytes:
        if self.children is None:
            body = self.data
        else:
            body = self.list_type + b"".join(c.to_bytes() for c in self.children)
        pad = b"\0" if len(body) & 1 else b""
        return self.cid + struct.pack("<I", len(body)) + body + pad


def _parse(buf: bytes, start: int, end: int, source: str) -> list[_Chunk]:
    out: list[_Chunk] = []
    off = start
    while off + 8 <= end:
        cid, size = struct.unpack_from("<4sI", buf, off)
        body = off + 8
        if body + size > end:
            raise ValueError(f"{source}: RIFF chunk {cid!r} at byte {off} claims {size} bytes past the file end")
        if cid in (b"LIST", b"RIFF"):
            out.append(_Chunk(cid, list_type=buf[body:body + 4],
                              children=_parse(buf, body + 4, body + size, source)))
        else:
            out.append(_Chunk(cid, data=buf[body:body + size]))
        off = body + size + (size & 1)
    return out


def _find(chunks: list[_Chunk], list_type: bytes, cid: bytes, source: str) -> _Chunk:
    for lst in chunks:
        if lst.children is not None and lst.list_type == list_type:
            for c in lst.children:
                if c.cid == cid:
                    return c
    raise ValueError(f"{source}: no {list_type.decode()}/{cid.decode()} chunk; expected a SoundFont 2 file")


def _records(data: bytes, st: struct.Struct) -> list[list]:
    return [list(st.unpack_from(data, i)) for i in range(0, len(data) - len(data) % st.size, st.size)]


def repair_soundfont(raw: bytes, source: str = "<soundfont>") -> bytes:
    """Return a copy of the SF2 file ``raw`` that symusic 0.5.8 renders at the right pitches."""
    if raw[:4] != b"RIFF" or raw[8:12] != b"sfbk":
        raise ValueError(f"{source}: not a SoundFont 2 file (expected a RIFF 'sfbk' header, got {raw[:12]!r})")
    top = _parse(raw, 12, len(raw), source)
    smpl = _find(top, b"sdta", b"smpl", source)
    igen_c = _find(top, b"pdta", b"igen", source)
    shdr_c = _find(top, b"pdta", b"shdr", source)
    inst = _records(_find(top, b"pdta", b"inst", source).data, _INST)
    ibag = _records(_find(top, b"pdta", b"ibag", source).data, _IBAG)
    igen = _records(igen_c.data, _IGEN)
    shdr = _records(shdr_c.data, _SHDR)
    terminal = shdr.pop()  # the "EOS" record closes the list
    pcm = bytearray(smpl.data)

    new_headers: dict[tuple, int] = {}  # (sample id, root, zone sound) -> new header index
    data_owner: dict[int, tuple] = {}  # sample id -> the zone sound that uses the original data
    for i in range(len(inst) - 1):
        global_gens: dict[int, int] = {}
        for b in range(inst[i][1], inst[i + 1][1]):
            lo, hi = ibag[b][0], ibag[b + 1][0]
            zone = {igen[g][0]: (g, igen[g][1]) for g in range(lo, hi)}
            if GEN_SAMPLE_ID not in zone:
                if b == inst[i][1]:
                    global_gens = {op: amt for op, (_, amt) in zone.items()}
                continue
            gens = {**global_gens, **{op: amt for op, (_, amt) in zone.items()}}
            sid = gens[GEN_SAMPLE_ID]
            if sid >= len(shdr):
                raise ValueError(f"{source}: instrument zone {b} names sample {sid}, but there are {len(shdr)}")
            root = _signed(gens.get(GEN_OVERRIDING_ROOT_KEY, 0xFFFF))
            root = shdr[sid][6] if root < 0 else root
            root = min(127, max(0, root - _signed(gens.get(GEN_COARSE_TUNE, 0))))
            # everything else prestosynth bakes into its cached, pitch-shifted copy of the sample
            sound = tuple(sorted((op, amt) for op, amt in gens.items()
                                 if op not in (GEN_SAMPLE_ID, GEN_OVERRIDING_ROOT_KEY, GEN_COARSE_TUNE, 43, 44)))
            key = (sid, root, sound)
            if key not in new_headers:
                hdr = list(shdr[sid])
                hdr[6] = root
                owner = data_owner.setdefault(sid, (root, sound))
                if owner != (root, sound):  # give this zone its own copy of the sample data
                    start, end = hdr[1], hdr[2]
                    copy = bytes(pcm[2 * start:2 * end])
                    new_start = len(pcm) // 2
                    pcm += copy + b"\0" * (2 * _GUARD)
                    shift = new_start - start
                    hdr[1], hdr[2], hdr[3], hdr[4] = start + shift, end + shift, hdr[3] + shift, hdr[4] + shift
                hdr[8] = 0  # sample links would point at headers of other roots; treat as mono
                hdr[9] = 1 if hdr[9] in (2, 4, 8) else hdr[9]
                new_headers[key] = len(shdr)
                shdr.append(hdr)
            g_sid = zone[GEN_SAMPLE_ID][0]
            igen[g_sid][1] = new_headers[key]
        # neutralise the generators prestosynth mishandles, now folded into the sample headers
        for b in range(inst[i][1], inst[i + 1][1]):
            for g in range(ibag[b][0], ibag[b + 1][0]):
                if igen[g][0] == GEN_OVERRIDING_ROOT_KEY:
                    igen[g][1] = 0xFFFF  # -1: "no override"
                elif igen[g][0] == GEN_COARSE_TUNE:
                    igen[g][1] = 0
    if len(shdr) > 0xFFFF:
        raise ValueError(f"{source}: repair needs {len(shdr)} sample headers, more than SF2 allows (65535)")
    shdr.append(terminal)
    smpl.data = bytes(pcm)
    igen_c.data = b"".join(_IGEN.pack(*r) for r in igen)
    shdr_c.data = b"".join(_SHDR.pack(*r) for r in shdr)
    return _Chunk(b"RIFF", list_type=b"sfbk", children=top).to_bytes()


def _signed(u16: int) -> int:
    return u16 - 0x10000 if u16 >= 0x8000 else u16
