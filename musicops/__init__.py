"""The `musicops` command: a thin Typer front over the project's packages."""
