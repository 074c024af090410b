"""Write many git blobs as one pack file instead of one loose file each.

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
