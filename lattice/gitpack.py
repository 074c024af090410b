"""Git object files written and read by hand where pygit2 cannot: many
blobs as one pack file instead of one loose file each, and what a damaged
pack or loose object still holds (`fsck --repair`).

libgit2 (through pygit2) writes every blob as a loose object: a folder, a
temp file, a link, a rename, about ten system calls and two file creations.
An `add` of 1,000 files committed 1,000 manifest blobs that way, which cost
more than storing the media itself. A pack is two files however many blobs
it holds, in git's documented format (pack v2 with an idx v2), so plain git,
libgit2 and `git fsck` read it like any pack git writes.

pygit2 offers no way to write a pack from new objects (its PackBuilder only
repacks objects already stored), hence this small writer: blobs only, no
deltas, SHA-1 object ids.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import zlib
from pathlib import Path

BLOB = 3  # git's object type number for a blob
# Below this many new blobs, loose objects are as cheap as a pack's two files.
PACK_FROM = 16


def blob_id(data: bytes) -> str:
    """The git object id (SHA-1) of a blob holding `data`."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_blobs(objects_dir: Path, blobs: list[bytes]) -> list[str]:
    """Store `blobs` in one new pack under `objects_dir/pack` and return their
    ids in order. The pack is renamed into place before its index, so a
    reader never finds an index without its pack; a crash leaves at most
    temp files."""
    ids = [blob_id(b) for b in blobs]
    unique = dict(zip(ids, blobs))
    pack_dir = Path(objects_dir) / "pack"
    pack_dir.mkdir(parents=True, exist_ok=True)

    from lattice.fsutil import create_temp, remove_quietly

    fd, tmp_pack = create_temp(pack_dir, ".pack")
    tmp_idx = None
    try:
        entries = []  # (binary id, offset, crc32 of the packed entry)
        digest = hashlib.sha1()
        with open(fd, "wb") as out:
            head = b"PACK" + struct.pack(">II", 2, len(unique))
            out.write(head)
            digest.update(head)
            offset = len(head)
            for oid, data in unique.items():
                packed = _entry_header(BLOB, len(data)) + zlib.compress(data, 1)
                out.write(packed)
                digest.update(packed)
                entries.append((bytes.fromhex(oid), offset, zlib.crc32(packed)))
                offset += len(packed)
            checksum = digest.digest()
            out.write(checksum)
        name = f"pack-{checksum.hex()}"
        fd, tmp_idx = create_temp(pack_dir, ".idx")
        with open(fd, "wb") as out:
            out.write(_index(entries, checksum))
        os.chmod(tmp_pack, 0o444)
        os.chmod(tmp_idx, 0o444)
        os.replace(tmp_pack, pack_dir / f"{name}.pack")
        os.replace(tmp_idx, pack_dir / f"{name}.idx")
    except BaseException:
        remove_quietly(tmp_pack, *([tmp_idx] if tmp_idx else []))
        raise
    return ids


def _entry_header(kind: int, size: int) -> bytes:
    """Type and size: 3 type bits and 4 size bits, then 7 size bits per byte."""
    byte = (kind << 4) | (size & 0x0F)
    size >>= 4
    out = bytearray()
    while size:
        out.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    out.append(byte)
    return bytes(out)


def _index(entries: list[tuple[bytes, int, int]], pack_checksum: bytes) -> bytes:
    """An idx v2: fan-out table, sorted ids, CRCs, offsets, checksums."""
    entries = sorted(entries)
    fanout = [0] * 256
    for oid, _, _ in entries:
        fanout[oid[0]] += 1
    total = 0
    for i in range(256):
        total += fanout[i]
        fanout[i] = total
    small, large = [], []
    for _, offset, _ in entries:
        if offset < 0x80000000:
            small.append(offset)
        else:
            small.append(0x80000000 | len(large))
            large.append(offset)
    body = b"".join(
        [
            b"\xfftOc",
            struct.pack(">I", 2),
            struct.pack(">256I", *fanout),
            *(oid for oid, _, _ in entries),
            struct.pack(f">{len(entries)}I", *(crc for _, _, crc in entries)),
            struct.pack(f">{len(small)}I", *small),
            struct.pack(f">{len(large)}Q", *large),
            pack_checksum,
        ]
    )
    return body + hashlib.sha1(body).digest()


# -- reading back damaged object files -----------------------------------

_KINDS = {1: b"commit", 2: b"tree", 3: b"blob", 4: b"tag"}
_OFS_DELTA, _REF_DELTA = 6, 7


def write_loose(objects: Path, kind: bytes, data: bytes) -> int:
    """Store an object as a loose file unless a sound one is there (1 if
    written). Atomic: a temp file renamed into place."""
    import hashlib
    import zlib

    from lattice.fsutil import atomic_write

    raw = b"%s %d\0" % (kind, len(data)) + data
    oid = hashlib.sha1(raw).hexdigest()
    path = objects / oid[:2] / oid[2:]
    if path.exists() and loose_sound(path, oid):
        return 0
    path.parent.mkdir(exist_ok=True)
    atomic_write(path, zlib.compress(raw), mode=0o444)
    return 1


def loose_sound(path: Path, oid: str) -> bool:
    """Whether the loose object file at `path` inflates to object `oid`."""
    import hashlib
    import zlib

    try:
        data = zlib.decompress(path.read_bytes())
    except (OSError, zlib.error):
        return False
    header, nul, body = data.partition(b"\0")
    kind, _, size = header.partition(b" ")
    return (bool(nul) and kind in _KINDS.values() and size.isdigit() and int(size) == len(body)
            and hashlib.sha1(data).hexdigest() == oid)


def pack_sound(pack: Path, idx: Path) -> bool:
    """Whether a pack and its index hold together: each file's trailing
    SHA-1 is that of its content, and the index names the pack's."""
    import hashlib

    try:
        index = idx.read_bytes()
        digest = hashlib.sha1()
        size = pack.stat().st_size
        with open(pack, "rb") as f:
            if size < 32 or f.read(4) != b"PACK":
                return False
            f.seek(0)
            left = size - 20
            while left:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    return False
                digest.update(chunk)
                left -= len(chunk)
            trailer = f.read(20)
    except OSError:
        return False
    return (len(index) >= 40 and digest.digest() == trailer == index[-40:-20]
            and hashlib.sha1(index[:-20]).digest() == index[-20:])


def _index_entries(index: bytes) -> dict[int, str] | None:
    """Offset -> object id of each entry an idx v2 lists; None when it
    cannot be read."""
    import struct

    try:
        if index[:8] != b"\xfftOc\x00\x00\x00\x02":
            return None
        count = struct.unpack(">I", index[8 + 255 * 4:8 + 256 * 4])[0]
        names = 8 + 256 * 4
        offsets = names + count * 24  # ids (20 bytes each), then CRCs (4 each)
        large = offsets + count * 4
        out = {}
        for i in range(count):
            off = struct.unpack(">I", index[offsets + 4 * i:offsets + 4 * i + 4])[0]
            if off & 0x80000000:
                j = off & 0x7FFFFFFF
                off = struct.unpack(">Q", index[large + 8 * j:large + 8 * j + 8])[0]
            out[off] = index[names + 20 * i:names + 20 * i + 20].hex()
        return out if len(out) == count else None
    except (struct.error, IndexError):
        return None


def salvage_pack(pack: Path, idx: Path | None) -> list[tuple[bytes, bytes]]:
    """(kind, data) of each object of a damaged pack that can still be read
    whole: at the offsets its index lists (else from the start, one entry
    after another, as far as they read), deltas applied to their bases,
    each checked against the id the index gives it."""
    import hashlib
    import zlib

    try:
        data = pack.read_bytes()
    except OSError:
        return []
    try:
        named = (_index_entries(idx.read_bytes()) if idx is not None else None) or {}
    except OSError:
        named = {}

    view = memoryview(data)

    def entry(at: int):
        """(kind, data or delta, base: relative offset or id, end) of the entry at `at`."""
        c = data[at]
        kind, size, shift, at = (c >> 4) & 7, c & 15, 4, at + 1
        while c & 0x80:
            c = data[at]
            size |= (c & 0x7F) << shift
            shift, at = shift + 7, at + 1
        base = None
        if kind == _OFS_DELTA:
            c = data[at]
            rel, at = c & 0x7F, at + 1
            while c & 0x80:
                c = data[at]
                rel, at = ((rel + 1) << 7) | (c & 0x7F), at + 1
            base = -rel
        elif kind == _REF_DELTA:
            base, at = data[at:at + 20].hex(), at + 20
        elif kind not in _KINDS:
            raise ValueError("no such entry type")
        inflate, out = zlib.decompressobj(), []
        while not inflate.eof and at < len(data):
            chunk = view[at:at + 65536]
            out.append(inflate.decompress(chunk))
            at += len(chunk)
        out = b"".join(out)
        if not inflate.eof or len(out) != size:
            raise ValueError("cut")
        return kind, out, base, at - len(inflate.unused_data)

    entries: dict[int, tuple] = {}
    if named:
        for at in sorted(named):
            with contextlib.suppress(Exception):  # noqa: BLE001 - an entry that cannot be read
                kind, raw, base, _ = entry(at)
                entries[at] = (kind, raw, at + base if isinstance(base, int) else base)
    else:
        at = 12
        while at < len(data):
            try:
                kind, raw, base, end = entry(at)
            except Exception:  # noqa: BLE001 - the rest cannot be told apart
                break
            entries[at] = (kind, raw, at + base if isinstance(base, int) else base)
            at = end
    done: dict[int, tuple[bytes, bytes]] = {}
    by_id: dict[str, tuple[bytes, bytes]] = {}

    def resolve(at: int, depth: int = 0):
        if at in done:
            return done[at]
        kind, raw, base = entries[at]
        if kind in _KINDS:
            done[at] = (_KINDS[kind], raw)
        elif depth < 1000:
            if isinstance(base, int):
                under = resolve(base, depth + 1) if base in entries else None
            else:
                under = by_id.get(base)
            if under is None:
                return None
            done[at] = (under[0], _apply_delta(under[1], raw))
        else:
            return None
        return done[at]

    for _ in range(2):  # a REF_DELTA's base may come later in the pack
        for at in sorted(entries):
            if at in done:
                continue
            with contextlib.suppress(Exception):  # noqa: BLE001 - a delta whose base is lost
                got = resolve(at)
                if got is not None:
                    oid = hashlib.sha1(b"%s %d\0" % (got[0], len(got[1])) + got[1]).hexdigest()
                    if named.get(at, oid) != oid:
                        del done[at]
                        continue
                    by_id[oid] = got
    return list(by_id.values())


def _apply_delta(base: bytes, delta: bytes) -> bytes:
    """git's delta format: the sizes, then copies from the base and inserts."""
    def size(at: int) -> tuple[int, int]:
        n = shift = 0
        while True:
            c = delta[at]
            n, shift, at = n | (c & 0x7F) << shift, shift + 7, at + 1
            if not c & 0x80:
                return n, at

    src, at = size(0)
    dst, at = size(at)
    if src != len(base):
        raise ValueError("delta base size")
    out = bytearray()
    while at < len(delta):
        op = delta[at]
        at += 1
        if op & 0x80:
            off = n = 0
            for i in range(4):
                if op & (1 << i):
                    off |= delta[at] << (8 * i)
                    at += 1
            for i in range(3):
                if op & (0x10 << i):
                    n |= delta[at] << (8 * i)
                    at += 1
            n = n or 0x10000
            if off + n > len(base):
                raise ValueError("delta copy")
            out += base[off:off + n]
        elif op:
            out += delta[at:at + op]
            at += op
        else:
            raise ValueError("delta op 0")
    if len(out) != dst:
        raise ValueError("delta size")
    return bytes(out)
