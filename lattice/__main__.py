from lattice.cli.entry import run

run()
