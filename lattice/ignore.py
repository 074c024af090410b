"""`.latticeignore`: files under the project that `status` never lists as
new and that `add DIR` passes over, in .gitignore syntax (through pathspec,
which follows git's rules). As in git, ignoring never applies to assets
already tracked, and a file named on the command line is added anyway."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

FILE = ".latticeignore"


def load(root: Path | str) -> Callable[[str], bool] | None:
    """A test of asset names (a folder's name ends with "/"), or None when
    the project has no ignore file. pathspec is imported only then."""
    try:
        with open(os.path.join(root, FILE), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        from lattice.errors import InvalidInput

        raise InvalidInput(f"{FILE}: cannot be read ({e})", hint="fix or remove the file") from None
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(lines).match_file
