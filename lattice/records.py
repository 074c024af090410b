"""The manifest's records: every asset's kind, tags, pin and versions, each
version with its recipe, as typed msgspec structs, and their TOML text.

Reading goes through msgspec's TOML decoder, writing through msgspec with
tomli-w (ten times faster than tomlkit, which matters when `add` writes
thousands of records). A new version is appended as one `[[versions]]`
block, so writing stays cheap for an asset with 1,000 versions. Loading
msgspec costs 20 ms, so only commands that read or write records import
this module (lattice.manifest, the files, does not).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import msgspec

from lattice.errors import RepositoryCorrupt
from lattice.paths import check_name, shown

CHANGE_TYPES = ("imported", "initial", "regenerated", "modified", "edited", "restored")


class Recipe(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False):
    generator: str
    generator_version: str
    seed: int
    params: dict[str, Any] = {}
    prompt: str = ""
    negative_prompt: str = ""
    inputs: list[str] = []  # input asset names, in order
    input_objects: list[str] = []  # their output objects when this recipe was made
    deterministic: bool = True
    output: str = ""  # the output's format (file extension): part of the key
    key: str = ""  # the recipe key: see lattice.recipe


class Version(msgspec.Struct, omit_defaults=True):
    number: int
    change: str
    time: str
    author: str
    object: str
    size: int
    media: dict[str, Any] = {}
    recipe: Recipe | None = None
    note: str = ""
    restored_from: int | None = None


class AssetRecord(msgspec.Struct, omit_defaults=True):
    path: str
    kind: str
    tags: list[str] = []
    pinned: int | None = None
    versions: list[Version] = []

    @property
    def current(self) -> Version:
        return self.versions[-1]

    @property
    def effective(self) -> Version:
        """The version dependents and exports use: the pin, else the current one."""
        return self.version(self.pinned) if self.pinned else self.current

    def version(self, number: int | None) -> Version:
        from lattice.errors import InvalidInput, command
        from lattice.paths import shown

        if number is None:
            return self.current
        if 1 <= number <= len(self.versions):
            return self.versions[number - 1]
        has = "its only version is v1" if len(self.versions) == 1 else f"its versions are v1 to v{len(self.versions)}"
        raise InvalidInput(f"{shown(self.path)} has no version v{number}", hint=f"{has} ({command('lattice log', self.path)})")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def author() -> str:
    import getpass

    try:
        fallback = getpass.getuser()
    except (KeyError, OSError):
        fallback = "unknown"
    return os.environ.get("LATTICE_AUTHOR") or os.environ.get("USER") or fallback


def encode(record: AssetRecord, old: bytes | None = None, old_count: int = 0) -> bytes:
    """TOML text for `record`. Given the previous text and how many
    versions it held, unchanged version blocks are kept verbatim."""
    data = msgspec.to_builtins(record)
    versions = data.pop("versions", [])
    head = msgspec.toml.encode(data).decode()
    if old is not None and 0 < old_count <= len(versions):
        cut = old.find(b"\n[[versions]]")
        body = old[cut + 1 :] if cut >= 0 else b""
        new = versions[old_count:]
    else:
        body, new = b"", versions
    if new:
        body = body.rstrip(b"\n") + (b"\n\n" if body else b"") + msgspec.toml.encode({"versions": new})
    return head.encode() + (b"\n" + body if body else b"")


def conflicted(data: bytes) -> bool:
    """The text holds an unresolved git merge conflict (<<<<<<< markers)."""
    return data.startswith(b"<<<<<<< ") or b"\n<<<<<<< " in data


def decode(data: bytes, path: Path) -> AssetRecord:
    if conflicted(data):
        raise RepositoryCorrupt(
            f"{path}: unresolved git merge conflict (<<<<<<< markers)",
            hint="resolve it in git: edit the file to keep one side, or `git checkout --ours/--theirs` it, then `git add` it",
        )
    try:
        record = msgspec.toml.decode(data, type=AssetRecord)
    except msgspec.DecodeError as e:
        why = str(e)
        if "at end of document" in why:  # a truncated file: say which line it stops at
            last = data.count(b"\n") + 1
            why = why.replace("at end of document", f"at line {last}, the end of the file: truncated?")
        raise RepositoryCorrupt(
            f"{path}: {why}",
            hint="`lattice fsck` lists damaged files; the last committed copy is in .lattice/history.git",
        ) from None
    try:
        check_name(record.path, stored=True)
    except Exception:
        raise RepositoryCorrupt(f"{path}: unsafe asset path {shown(record.path)}") from None
    if not record.versions:
        raise RepositoryCorrupt(f"{path}: the asset has no versions")
    for i, v in enumerate(record.versions, 1):
        if v.number != i:
            raise RepositoryCorrupt(f"{path}: version {v.number} is listed where v{i} belongs")
    return record
