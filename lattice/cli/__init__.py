"""The command-line interface: a thin typer layer over the library.

Each command parses options, finds the repository, calls one library
function and renders its result as text or `--json`."""
