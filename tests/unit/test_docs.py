"""The README is the front door: every command must be documented there, with an example."""

from __future__ import annotations

from pathlib import Path

from tri24es.cli.app import COMMANDS, build

README = Path(__file__).resolve().parents[2] / "README.md"


def command_paths() -> list[str]:
    paths = []
    for name in COMMANDS:
        paths.append(f"tri24es {name}")
        paths.extend(f"tri24es {name} {sub}" for sub in getattr(build(name), "commands", {}))
    return paths


def test_every_command_has_an_example_in_the_readme() -> None:
    text = README.read_text()
    commands = command_paths()
    assert "tri24es init" in commands
    missing = [c for c in commands if c not in text]
    assert not missing, f"commands without an example in README.md: {missing}"


def test_readme_starts_with_the_two_setup_commands() -> None:
    head = README.read_text()[:1500]
    assert "pip install -e ." in head
    assert "python -m pytest" in head
