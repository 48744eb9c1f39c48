from pytrafgen.cli.main import run

run()
