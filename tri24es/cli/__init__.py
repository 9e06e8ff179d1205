"""The ``tri24es`` command line: ``app.py`` holds the typer app; each command has its module."""
