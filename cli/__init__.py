"""actkit.cli: the Typer command-line app (``actkit``)."""
