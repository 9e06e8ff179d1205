"""What every state machine shares: a transition table turned into a fast lookup.

A machine is declared once, as data: an Enum of states and a list of ``{"trigger", "source",
"dest"}`` dicts in the format ``transitions`` reads. :class:`StateTable` is the one API over
that list: a dict ``{(state, trigger): dest}`` built at import (``can``, ``fire``,
``allowed``), which services and projection folds ask on every event, so no
``transitions.Machine`` is created per event. ``transitions`` draws the mermaid diagram in
``docs/machines.md`` from the same list (``GraphMachine``), and the tests check the lookup
against a ``transitions.Machine`` built from it.

Machines decide; they never persist.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import Any, Generic, TypedDict, TypeVar

from tri24es.errors import Tri24esError

S = TypeVar("S", bound=enum.Enum)


class Move(TypedDict, Generic[S]):
    """One row of a transition table: ``trigger`` moves any of ``source`` to ``dest``."""

    trigger: str
    source: S | list[S]
    dest: S


class IllegalTransition(Tri24esError):
    """A trigger was fired from a state that does not allow it."""

    def __init__(
        self, machine: str, state: enum.Enum, trigger: str, allowed: Iterable[str] = ()
    ) -> None:
        self.machine = machine
        self.state = state
        self.trigger = trigger
        self.allowed = tuple(allowed)
        where = f"{machine}: cannot {trigger!r} from state {state.value!r}"
        if self.allowed:
            super().__init__(f"{where}; allowed there: {', '.join(self.allowed)}")
        else:
            super().__init__(f"{where}, a terminal state")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.machine, self.state, self.trigger, self.allowed))


class StateTable(Generic[S]):
    """A named machine: its states, its transition table and the lookups derived from it.

    Creating one registers it by name, for :func:`mermaid` and :func:`render_doc`.
    """

    def __init__(self, name: str, states: type[S], moves: Sequence[Move[S]], initial: S) -> None:
        self.name = name
        self.states = states
        self.moves = moves
        self.initial = initial
        self.triggers: tuple[str, ...] = tuple(dict.fromkeys(m["trigger"] for m in moves))
        self.lookup: dict[tuple[S, str], S] = {}
        for move in moves:
            for source in sources(move):
                key = (source, move["trigger"])
                if key in self.lookup:
                    raise ValueError(f"{name}: {move['trigger']!r} from {source} is declared twice")
                self.lookup[key] = move["dest"]
        if name in TABLES:
            raise ValueError(f"a machine named {name!r} already exists")
        TABLES[name] = self

    def can(self, state: S, trigger: str) -> bool:
        return (state, trigger) in self.lookup

    def fire(self, state: S, trigger: str | None) -> S:
        """The state after ``trigger`` (None: no change); IllegalTransition if not allowed."""
        if trigger is None:
            return state
        try:
            return self.lookup[state, trigger]
        except KeyError:
            raise self.illegal(state, trigger) from None

    def allowed(self, state: S) -> tuple[str, ...]:
        """The triggers ``state`` accepts, in table order."""
        return tuple(t for t in self.triggers if (state, t) in self.lookup)

    def illegal(self, state: S, trigger: str) -> IllegalTransition:
        return IllegalTransition(self.name, state, trigger, self.allowed(state))

    def mermaid(self) -> str:
        """The table as a mermaid ``stateDiagram-v2``, drawn by ``transitions``."""
        # Imported on use: the diagram extensions pull in asyncio (~30 ms at every start).
        from transitions.extensions.diagrams import GraphMachine

        graph = GraphMachine(
            states=self.states,
            transitions=self.moves,
            initial=self.initial,
            auto_transitions=False,
            graph_engine="mermaid",
            title=self.name,
        )
        lines = [line.rstrip() for line in (graph.get_graph().draw(None) or "").splitlines()]
        # transitions writes a bare title between the "---" lines; mermaid's front matter is
        # YAML and wants "title: ...".
        if lines[:1] == ["---"] and "---" in lines[1:]:
            lines = lines[lines.index("---", 1) + 1 :]
        return "\n".join(["---", f"title: {self.name}", "---", *lines]).strip()


def sources(move: Move[S]) -> list[S]:
    source = move["source"]
    return source if isinstance(source, list) else [source]


TABLES: dict[str, StateTable[Any]] = {}


def _load_tables() -> None:
    """Each table registers itself in ``TABLES`` when its module is first imported."""
    import tri24es.machines.task
    import tri24es.machines.worker  # noqa: F401


def mermaid(machine_name: str) -> str:
    """The mermaid diagram of the machine called ``machine_name`` ("task", "worker")."""
    _load_tables()
    try:
        return TABLES[machine_name].mermaid()
    except KeyError:
        known = ", ".join(sorted(TABLES))
        raise ValueError(f"no machine named {machine_name!r} (known: {known})") from None


DOC_HEADER = """\
# State machines

Generated from the transition tables in `tri24es/machines/` by `python -m tri24es.machines`.
Do not edit by hand: `tests/unit/test_machines.py` fails when this file and the tables differ.
"""


def render_doc() -> str:
    """The text of ``docs/machines.md``: a diagram and a table per machine."""
    _load_tables()
    parts = [DOC_HEADER]
    for name, table in TABLES.items():
        rows = "\n".join(
            f"| `{m['trigger']}` | {', '.join(s.value for s in sources(m))} | {m['dest'].value} |"
            for m in table.moves
        )
        parts.append(
            f"## {name}\n\n"
            f"States: {', '.join(s.value for s in table.states)}; "
            f"initial: {table.initial.value}.\n\n"
            f"```mermaid\n{table.mermaid()}\n```\n\n"
            f"| trigger | from | to |\n|---|---|---|\n{rows}\n"
        )
    return "\n".join(parts)
