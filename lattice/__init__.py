"""Lattice: a git-like repository for AI-generated media.

The package is a library first: `lattice.repo.Repository` and the operation
modules (`lattice.add`, `lattice.status`, `lattice.fsck`, ...) are what the
CLI in `lattice.cli` calls, and what tests and plug-ins may call directly.
"""

__version__ = "0.1.0"
