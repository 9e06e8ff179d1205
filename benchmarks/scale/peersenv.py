"""The peers' own virtualenv (``benchmarks/.peers-venv``, git-ignored): made and filled by
the benchmark, apart from the project's dependencies. Each peer is installed on its own, so
that one that fails to install is reported and the others still run."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.scale.launch import REPO

VENV = REPO / "benchmarks" / ".peers-venv"

#: The versions measured (pinned, so that a figure can be traced to the code that made it).
PEERS: dict[str, list[str]] = {
    "PgQueuer": ["pgqueuer==1.6.0", "asyncpg==0.32.0"],
    "Procrastinate": ["procrastinate==3.10.0", "psycopg[binary,pool]==3.3.9"],
    "litequeue": ["litequeue==0.9"],
    "huey": ["huey==3.5.4"],
    "persist-queue": ["persist-queue==1.1.0"],
    "eventsourcing": ["eventsourcing==9.5.6", "psycopg[binary,pool]==3.3.9"],
}


@dataclass
class PeersEnv:
    python: str | None
    status: dict[str, str] = field(default_factory=dict)  # peer -> "ok" or why not

    def has(self, peer: str) -> bool:
        return self.python is not None and self.status.get(peer) == "ok"


def _stamp(requirements: list[str]) -> str:
    return hashlib.sha256(json.dumps(requirements).encode()).hexdigest()[:16]


def _pip(python: Path, requirements: list[str]) -> str:
    """"ok", or the reason pip gave."""
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements],
                          capture_output=True, text=True, timeout=900)
    if done.returncode == 0:
        return "ok"
    lines = [ln for ln in done.stderr.splitlines() if "WARNING: Location" not in ln]
    return f"pip install {' '.join(requirements)} failed: " + " | ".join(lines[-4:])


def prepare(install: bool) -> PeersEnv:
    """The peers' interpreter and which peers are usable. Without ``install``, only a venv
    already made is used (no network needed)."""
    python = VENV / "bin" / "python"
    status_file = VENV / "peers-status.json"
    known: dict[str, dict[str, str]] = {}
    if status_file.exists():
        known = json.loads(status_file.read_text())
    if not python.exists():
        if not install:
            return PeersEnv(None, dict.fromkeys(PEERS, f"no peers venv at {VENV} (not made:"
                                                        " --no-install)"))
        made = subprocess.run([sys.executable, "-m", "venv", str(VENV)], capture_output=True,
                              text=True)
        if made.returncode != 0:
            return PeersEnv(None, dict.fromkeys(PEERS, f"python -m venv failed: {made.stderr}"))
    status: dict[str, str] = {}
    for peer, requirements in PEERS.items():
        entry = known.get(peer, {})
        if entry.get("stamp") == _stamp(requirements) and entry.get("status") == "ok":
            status[peer] = "ok"
        elif install:
            print(f"  installing {peer} into {VENV.relative_to(REPO)} ...", flush=True)
            status[peer] = _pip(python, requirements)
            known[peer] = {"stamp": _stamp(requirements), "status": status[peer]}
        else:
            status[peer] = entry.get("status", "not installed (--no-install)")
    status_file.write_text(json.dumps(known, indent=1) + "\n")
    return PeersEnv(str(python), status)


def versions(env: PeersEnv) -> dict[str, str]:
    """What is installed in the peers' venv (pip freeze), for the results file."""
    if env.python is None:
        return {}
    out = subprocess.run([env.python, "-m", "pip", "freeze"], capture_output=True, text=True)
    pairs = (line.split("==", 1) for line in out.stdout.splitlines() if "==" in line)
    return {name: version for name, version in pairs}
