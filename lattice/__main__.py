from lattice.cli.main import run

run()
