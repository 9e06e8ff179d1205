"""``tri24es up --demo``: a handful of sample tasks and a simulated agent to run them.

The agent (``python -m tri24es.runtime.demo agent``) reads the task text on stdin, prints a few
progress lines and some usage lines in the generic formats the worker parses as spend
(``{"cost_usd": ...}`` and ``{"model": ..., "input_tokens": ..., "output_tokens": ...}``),
pausing briefly between them, and exits 0. A task whose text holds ``demo: fail-first``
fails its first attempt (exit 1), to show a retry.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tri24es.files import write_private
from tri24es.names import Priority
from tri24es.services import TaskSpec

#: Priced by genai-prices (see ``tri24es.pricing.Pricer``), so the spend is not an estimate.
DEMO_MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5")
STEP_SECONDS = 0.3
FAIL_FIRST = "demo: fail-first"


@dataclass(frozen=True)
class DemoTask:
    slug: str
    priority: Priority
    title: str
    steps: tuple[str, ...]
    fail_first: bool = False

    def body(self) -> str:
        lines = [f"# {self.title}", "", "Steps:", *(f"- {step}" for step in self.steps)]
        if self.fail_first:
            lines += ["", FAIL_FIRST, "(the first attempt fails, to show a retry)"]
        return "\n".join(lines) + "\n"


DEMO_TASKS = (
    DemoTask("fix-login-loop", Priority.CRITICAL, "Fix the login redirect loop",
             ("reproduce the loop", "patch the session check", "add a regression test")),
    DemoTask("rate-limit-api", Priority.HIGH, "Add rate limiting to the public API",
             ("pick a token bucket", "wire it into the middleware")),
    DemoTask("flaky-checkout-test", Priority.HIGH, "Stabilise test_checkout_total",
             ("find the race", "freeze the clock in the test"), fail_first=True),
    DemoTask("readme-quickstart", Priority.MEDIUM, "Write the README quick start",
             ("draft the steps", "check them on a clean machine")),
    DemoTask("upgrade-pydantic", Priority.MEDIUM, "Upgrade pydantic to 2.9",
             ("bump the pin", "fix the deprecations", "run the suite")),
    DemoTask("tidy-changelog", Priority.LOW, "Tidy up the changelog",
             ("merge duplicate entries",)),
)


def demo_agent_command() -> str:
    """The ``--exec`` command line that runs the simulated agent with this interpreter."""
    return shlex.join([sys.executable, "-m", "tri24es.runtime.demo", "agent"])


def demo_specs(run: str | None = None) -> list[TaskSpec]:
    """The demo tasks, with ids unique to this run (``demo-<run>-<slug>``), so that every
    ``up --demo`` has fresh work to show."""
    tag = run or secrets.token_hex(2)
    return [TaskSpec(task_id=f"demo-{tag}-{t.slug}", title=t.title, priority=t.priority,
                     body=t.body()) for t in DEMO_TASKS]


def write_queue_files(queue_dir: Path, specs: list[TaskSpec]) -> list[Path]:
    """Each task as ``tasks/queue/<PRIORITY>/<id>.md``, written whole (a temporary name the
    queue watcher ignores, then a rename) so that no half-written file is ever read."""
    written = []
    for spec in specs:
        target = queue_dir / spec.priority.value / f"{spec.task_id}.md"
        temporary = target.with_name(target.name + ".tmp")
        write_private(temporary, spec.body.encode(), queue_dir.parent.parent)  # the root
        os.replace(temporary, target)
        written.append(target)
    return written


# --- the simulated agent ----------------------------------------------------------------


def _say(line: str) -> None:
    print(line, flush=True)


def _usage_lines(text: str, steps: int) -> list[dict[str, object]]:
    """Two or three usage records, sized by the task, in both generic formats."""
    size = len(text)
    lines: list[dict[str, object]] = [
        {"model": DEMO_MODELS[0], "input_tokens": 4000 + 40 * size, "output_tokens": 600 + size},
        {"cost_usd": round(0.004 + 0.003 * steps, 4)},
    ]
    if steps > 2:
        lines.append({"model": DEMO_MODELS[1], "input_tokens": 2500 + 10 * size,
                      "output_tokens": 400})
    return lines


def run_agent(text: str, attempt: int) -> int:
    """Pretend to work on the task ``text``; the exit code."""
    title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")),
                 "untitled task")
    steps = [line[2:].strip() for line in text.splitlines() if line.startswith("- ")]
    _say(f"demo agent: working on {title!r} (attempt {attempt})")
    usages = _usage_lines(text, len(steps))
    for n, step in enumerate(steps or ["think about it"], start=1):
        time.sleep(STEP_SECONDS)
        _say(f"step {n}/{max(len(steps), 1)}: {step}")
        if n <= len(usages):
            _say(json.dumps(usages[n - 1]))
    for usage in usages[len(steps):]:
        _say(json.dumps(usage))
    if FAIL_FIRST in text and attempt <= 1:
        _say("demo agent: the test is still flaky: giving up on this attempt")
        return 1
    _say("demo agent: done")
    return 0


def main(argv: list[str]) -> int:
    if argv != ["agent"]:
        print("usage: python -m tri24es.runtime.demo agent  (the task text on stdin)",
              file=sys.stderr)
        return 2
    attempt = int(os.environ.get("TRI24ES_ATTEMPT", "1") or "1")
    return run_agent(sys.stdin.read(), attempt)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
