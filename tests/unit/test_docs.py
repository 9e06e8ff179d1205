"""The README is the front door: every command must be documented there, with an example."""

from __future__ import annotations

from pathlib import Path

import typer

from tri24es.cli.app import app

README = Path(__file__).resolve().parents[2] / "README.md"


def command_paths(group: typer.Typer, prefix: str = "tri24es") -> list[str]:
    paths = []
    for command in group.registered_commands:
        name = command.name or (command.callback.__name__ if command.callback else "")
        paths.append(f"{prefix} {name.replace('_', '-')}")
    for sub in group.registered_groups:
        assert sub.name is not None
        assert sub.typer_instance is not None
        paths.append(f"{prefix} {sub.name}")
        paths.extend(command_paths(sub.typer_instance, f"{prefix} {sub.name}"))
    return paths


def test_every_command_has_an_example_in_the_readme() -> None:
    text = README.read_text()
    commands = command_paths(app)
    assert "tri24es init" in commands
    missing = [c for c in commands if c not in text]
    assert not missing, f"commands without an example in README.md: {missing}"


def test_readme_starts_with_the_two_setup_commands() -> None:
    head = README.read_text()[:1500]
    assert "pip install -e ." in head
    assert "python -m pytest" in head
