"""The trust gate for command generators (compare git's safe.directory).

A repository's config can declare programs to run. A cloned or shared project
must not run them until this user has read and approved them, so approvals
live outside every repository, in the user's own config:

    $XDG_CONFIG_HOME/lattice/trusted.toml   (default ~/.config/lattice/)

    [repos]
    "/real/path/of/project" = "<BLAKE3 of the canonical generators table>"

An approval names the exact commands it approved: any change to the
`[generators]` table, or to a file inside the project that an argv names
(a script, a folder's files, the module after `-m`), changes the digest and
needs a new `lattice trust`.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from lattice.errors import InvalidInput


def trust_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME", "")
    # The XDG spec says a relative value is to be ignored.
    root = Path(base) if os.path.isabs(base) else Path.home() / ".config"
    return root / "lattice" / "trusted.toml"


def _plain(value: Any) -> Any:
    """JSON-ready form of a parsed TOML value (tomlkit items unwrap)."""
    if hasattr(value, "unwrap"):
        value = value.unwrap()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)  # dates and times


def commands_digest(config: dict, repo_root: Path | None = None) -> str:
    """BLAKE3 of the canonical JSON of the config's `generators` table and,
    given the repository, of every file inside it that an argv names (a
    `gen.py` a `git pull` changes needs approving again, like the argv)."""
    import blake3

    table = _plain((config or {}).get("generators") or {})
    canon = json.dumps(table, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    h = blake3.blake3(canon.encode())
    if repo_root is not None:
        for name, path in _scripts(table, Path(repo_root)):
            h.update(b"\0" + os.fsencode(name) + b"\0")  # a file name need not be UTF-8
            h.update(blake3.blake3(path.read_bytes()).digest())
    return h.hexdigest()


def _named_paths(argv: list) -> list[str]:
    """What each argv element may name as a file: the element, and the
    module after `-m` (`python3 -m tool` runs tool.py, or the package
    tool/; `-m tool.sub` runs tool/sub.py, importing tool/ first)."""
    out: list[str] = []
    previous = None
    for arg in argv:
        if isinstance(arg, str) and arg:
            out.append(arg)
            if previous == "-m":
                top = arg.split(".")[0]
                out += [top + ".py", top]
        previous = arg
    return [p for p in out if p]


def _scripts(table: dict, root: Path) -> list[tuple[str, Path]]:
    """Files inside the repository named by argv elements, sorted: a file,
    or every file in a folder (`python3 tool` runs tool/__main__.py), also
    as `-m MODULE`. An element is taken as written, braces
    and all, when such a path exists. A file is read where a link in the
    project points; a folder only inside the project (a link to a folder
    of model weights elsewhere is data, too big to read on every run)."""
    real_root = os.path.realpath(root)
    found = {}
    for spec in table.values() if isinstance(table, dict) else ():
        argv = spec.get("argv") if isinstance(spec, dict) else None
        for arg in _named_paths(argv if isinstance(argv, list) else []):
            named = os.path.normpath(os.path.join(real_root, arg))
            real = os.path.realpath(named)
            if not named.startswith(real_root + os.sep) or real == os.path.join(real_root, ".lattice"):
                continue
            if os.path.isfile(real):
                # A link out of the project (to a file in /tmp, say) runs
                # what it points at: that is what is approved.
                found[os.path.relpath(named, real_root)] = Path(real)
            elif os.path.isdir(real) and real.startswith(real_root + os.sep):
                for dirpath, dirnames, files in os.walk(real):
                    dirnames[:] = sorted(d for d in dirnames if d not in (".lattice", ".git", "__pycache__"))
                    for f in files:
                        full = os.path.join(dirpath, f)
                        if os.path.isfile(full):
                            found[os.path.relpath(full, real_root)] = Path(full)
    return sorted(found.items())


def _key(repo_root: Path) -> str:
    """The approvals file's key for a project: its real path, or where that
    is no text (a folder name that is not UTF-8) `raw:` and its bytes in hex,
    which no path starting with `/` can be mistaken for."""
    real = os.path.realpath(repo_root)
    try:
        real.encode("utf-8")
    except UnicodeEncodeError:
        return "raw:" + os.fsencode(real).hex()
    return real


def _read() -> dict[str, str]:
    import tomllib

    path = trust_file()
    try:
        with open(path, "rb") as f:
            repos = tomllib.load(f).get("repos", {})
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise InvalidInput(f"cannot read {path}: {e}", hint="fix the file, or delete it to start over") from None
    return {k: v for k, v in repos.items() if isinstance(v, str)} if isinstance(repos, dict) else {}


def _write(repos: dict[str, str]) -> None:
    import tomlkit

    from lattice.fsutil import atomic_write

    doc = tomlkit.document()
    doc.add(tomlkit.comment("Repositories whose command generators you approved (`lattice trust`)."))
    doc["repos"] = dict(sorted(repos.items()))
    atomic_write(trust_file(), tomlkit.dumps(doc).encode(), mode=0o600)


def needs_trust(config: dict) -> bool:
    return bool((config or {}).get("generators"))


def is_trusted(repo_root: Path, config: dict) -> bool:
    """True when the config declares no commands, or this user approved
    exactly these commands for this repository."""
    if not needs_trust(config):
        return True
    try:
        approved = _read().get(_key(repo_root))
    except InvalidInput:
        return False  # an unreadable approvals file approves nothing
    return approved == commands_digest(config, repo_root)


def require(repo_root: Path | None, config: dict, gen_id: str) -> None:
    """Raise TrustRequired unless this user approved the config's commands
    for `repo_root`, saying whether nothing was approved here or what was
    approved has changed since (the argv, or a file inside the project an
    argv names: a folder a program writes its cache into changes too)."""
    from lattice.errors import TrustRequired
    from lattice.paths import shown

    if repo_root is not None and is_trusted(repo_root, config):
        return
    try:
        approved = repo_root is not None and _key(repo_root) in _read()
    except InvalidInput as e:  # an unreadable approvals file approves nothing
        raise TrustRequired(f"command generator {shown(gen_id)} is not approved: {e.message}",
                            hint="fix that file, or delete it and run `lattice trust` again") from None
    if not approved:
        raise TrustRequired(f"command generator {shown(gen_id)} is declared in a config you have not approved")
    files = [name for name, _ in _scripts(_plain((config or {}).get("generators") or {}), Path(repo_root))]
    named = f" and the files its commands name ({', '.join(files[:3])}{f' and {len(files) - 3} more' if len(files) > 3 else ''})" if files else ""
    raise TrustRequired(
        f"command generator {shown(gen_id)}: this project's commands changed since you approved them",
        hint=f"review [generators] in .lattice/config.toml{named}, then run `lattice trust` again",
    )


@contextlib.contextmanager
def _locked():
    """Serialize read-modify-write so two `lattice trust` runs lose nothing."""
    import fcntl

    lock = trust_file().with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def trust(repo_root: Path, config: dict) -> str:
    """Approve the config's commands for `repo_root`; returns the digest."""
    digest = commands_digest(config, repo_root)
    with _locked():
        repos = _read()
        repos[_key(repo_root)] = digest
        _write(repos)
    return digest


def untrust(repo_root: Path) -> bool:
    """Withdraw an approval; True if there was one."""
    with _locked():
        repos = _read()
        if repos.pop(_key(repo_root), None) is None:
            return False
        _write(repos)
    return True
