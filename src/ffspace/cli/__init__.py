"""The command-line interface (typer): thin wrappers over `ffspace.workflow`."""
