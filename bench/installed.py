"""Run `lattice` in a benchmark the way a user's `pip install .` runs it.

Two things would otherwise be measured that no user pays:
- this machine sets PYTHONDONTWRITEBYTECODE, so the editable install in the
  development virtualenv recompiles the package on every start;
- that editable install adds a `.pth` hook that loads an import finder
  (and pathlib, urllib, ...) on every start: about 10 ms.

So the package is copied and byte-compiled, and run by a virtualenv of its
own that sees the development virtualenv's dependencies (a `.pth` listing
its site-packages: paths listed there join sys.path, the `.pth` files inside
them are not run), started like the console script.
"""

from __future__ import annotations

import compileall
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def install(work: Path) -> tuple[list[str], Path]:
    """(the argv that runs `lattice`, the folder to put on PYTHONPATH), set
    up under `work`."""
    site = work / "site"
    shutil.copytree(ROOT / "lattice", site / "lattice", ignore=shutil.ignore_patterns("__pycache__"))
    if not compileall.compile_dir(site / "lattice", quiet=1):
        raise SystemExit("bench: could not byte-compile the package")
    script = site / "lattice-script"
    script.write_text("import sys\nfrom lattice.cli.entry import run\nsys.exit(run())\n")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib, "bench-deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    return [str(python), str(script)], site
