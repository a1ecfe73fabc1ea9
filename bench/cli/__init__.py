"""The command line: `python -m bench` and its subcommands."""
