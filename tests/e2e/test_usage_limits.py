"""Provider usage windows and spend without progress, with real workers and stand-in agents.

An agent that reports its provider's usage limit pauses its model until the reset and its
task goes back to the queue at no retry cost; an agent that spends with no sign of progress
fails with ``no_progress`` and the evidence.
"""

from __future__ import annotations

import os
import re
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.e2e.test_scheduling import claims_of
from tests.e2e.test_worker import Fleet, wait_until
from tri24es import events as ev
from tri24es.names import MODELS_STREAM, RequeueReason
from tri24es.timeutil import to_us

SECOND = 1_000_000


def test_a_usage_limit_pauses_its_model_until_the_reset_and_other_models_run_on(
    fleet: Fleet,
) -> None:
    # Claude Code's older form, the reset an hour ahead; the agent keeps running after it
    # (the worker must stop it), and has no retries to spare (the stop must cost none).
    fleet.submit("fix", "say-on 1 Claude AI usage limit reached|{epoch+3600}\nhang-on 1\n"
                 "say fixed", model="claude", max_retries=0)
    claude = fleet.worker("--id", "w1", "--model", "claude", lease=30.0)
    wait_until(lambda: fleet.events(ev.TaskRequeued), "the attempt stopped and requeued")
    fleet.submit("more", "say more", model="claude")  # for the paused model: it waits
    fleet.submit("other", "say other model", model="codex")
    codex = fleet.worker("--id", "w2", "--model", "codex", lease=30.0)
    wait_until(lambda: fleet.state("other") == "completed", "the other model's task ran")
    printed = (fleet.root / "logs/tasks/fix/1.log").read_text()
    reset = int(re.search(r"\|(\d+)", printed).group(1))  # type: ignore[union-attr]
    [paused] = fleet.events(ev.ModelPaused)
    assert paused.model == "claude"
    assert paused.until is not None
    assert to_us(paused.until) == reset * SECOND
    assert paused.by == "w1"
    assert paused.reason == f"usage limit: Claude AI usage limit reached|{reset}"
    [requeued] = fleet.events(ev.TaskRequeued)
    assert (requeued.task_id, requeued.reason) == ("fix", RequeueReason.USAGE_LIMIT)
    row = fleet.services.task("fix")
    assert (row.state, row.retries_used) == ("queued", 0)  # max_retries=0: it may run again
    assert not fleet.events(ev.TaskFailed)
    assert len(claims_of(fleet, "fix")) == 1  # not claimed again before the reset
    assert fleet.state("more") == "queued"
    started = fleet.started("fix")
    wait_until(lambda: not Path(f"/proc/{started.pid}").exists()
               or "Z" in Path(f"/proc/{started.pid}/stat").read_text().split()[2],
               "the agent's keeper ended")
    status = fleet.run("status")
    assert "2 waiting for model=claude: the model is paused until" in status.stdout
    assert claude.poll() is None
    assert codex.poll() is None


def test_claims_of_a_paused_model_resume_by_themselves_at_the_reset(fleet: Fleet) -> None:
    # Gemini CLI's quota error without a retry time: the default pause (here 3 s). The agent
    # exits 0 after it: a success by its exit code, a usage limit by its words.
    fleet.submit("gen", "say-on 1 Quota exceeded for quota metric 'Gemini 2.5 Pro Requests' "
                 "and limit 'Gemini 2.5 Pro Requests per day per user per tier' of service "
                 "'cloudcode-pa.googleapis.com'\nsay generated", model="gemini", max_retries=0)
    # A 30 s lease beats every 10 s and a poll every 60 s: waking at the reset claims it.
    proc = fleet.worker("--id", "w1", "--model", "gemini", lease=30.0,
                        env={"TRI24ES_USAGE_PAUSE": "3s", "POLL_INTERVAL": "60"})
    wait_until(lambda: fleet.state("gen") == "completed", "the task ran after the reset")
    [paused] = fleet.events(ev.ModelPaused)
    assert paused.until is not None
    until = to_us(paused.until)
    [pause_event] = [r for r in fleet.services.store.read_stream(MODELS_STREAM)]
    assert 0 < until - pause_event.recorded_at <= 3 * SECOND
    [requeued] = fleet.events(ev.TaskRequeued)
    assert requeued.reason is RequeueReason.USAGE_LIMIT
    (first, _), (second, claimed_again) = claims_of(fleet, "gen")
    assert (first, second) == (1, 2)
    assert claimed_again >= until  # never before the reset
    assert not fleet.events(ev.TaskFailed)
    assert fleet.services.task("gen").retries_used == 0
    assert proc.poll() is None


def test_an_agent_spending_without_progress_fails_with_the_evidence(fleet: Fleet) -> None:
    # It works, spends, then goes silent (attempt 1); the second attempt finishes. The
    # fleet's rule: $0.20 spent with no progress for 2 s.
    fleet.submit("loop", "say working\nspend 0.3\nspend 0.2\nhang-on 1\nsay done",
                 max_retries=1)
    proc = fleet.worker("--id", "w1", env={"TRI24ES_NO_PROGRESS": "$0.20 2s"})
    wait_until(lambda: fleet.state("loop") == "completed", "the retry completed")
    [failed] = fleet.events(ev.TaskFailed)
    assert (failed.attempt, failed.error) == (1, "no_progress")
    evidence = failed.no_progress
    assert evidence is not None
    assert evidence.spent_usd == Decimal("0.5")
    assert evidence.seconds >= 2
    assert evidence.last_line == '{"cost_usd": 0.2}'
    [requeued] = fleet.events(ev.TaskRequeued)
    assert requeued.reason is RequeueReason.RETRY  # a failure: it cost a retry
    assert fleet.services.task("loop").retries_used == 1
    shown = fleet.run("tasks", "show", "loop")
    assert "no_progress" in shown.stdout
    assert proc.poll() is None


def test_a_tasks_own_rule_wins_and_progress_keeps_an_attempt_going(fleet: Fleet) -> None:
    # The task's rule ($1 after 1 s) is not broken by $0.50 of spend, however long it
    # waits; the fleet's ($0.01 after 1 s) would have been.
    fleet.submit("cheap", "say working\nspend 0.5\nwait go\nsay done",
                 no_progress=ev.NoProgress(usd=Decimal(1), after_s=1))
    proc = fleet.worker("--id", "w1", env={"TRI24ES_NO_PROGRESS": "$0.01 1s"})
    fleet.started("cheap")
    # Past the fleet's second and then some, so that the rule would have broken it (a
    # delay for the rule to act on, not a measure: a slow machine only checks less).
    time.sleep(3)
    (fleet.root / "go").touch()
    wait_until(lambda: fleet.state("cheap") == "completed", "the task completed")
    assert not fleet.events(ev.TaskFailed)
    assert proc.poll() is None


def test_tasks_update_gives_a_queued_task_its_own_rule_and_the_worker_keeps_it(
        fleet: Fleet) -> None:
    """`submit --no-progress` had no `tasks update` counterpart: a queued task's rule could
    not be set or changed. It is now a TaskUpdated, shown by `tasks show`, and the worker
    runs the task by it (no fleet rule here: only the update can stop the attempt)."""
    fleet.submit("loop", "say working\nspend 0.3\nhang-on 1\nsay done", max_retries=0)
    assert "the fleet's" in fleet.run("tasks", "show", "loop").stdout
    bad = fleet.run("tasks", "update", "loop", "--no-progress", "")
    assert (bad.returncode, bad.stderr) == (2, "tri24es: error: --no-progress '': a task's rule "
                                               "can be changed (to a rule, or off), not "
                                               "removed: nothing changed\n")
    done = fleet.run("tasks", "update", "loop", "--no-progress", "$0.20 2s")
    assert (done.returncode, done.stdout) == (0, "loop: updated\n")
    shown = fleet.run("tasks", "show", "loop")
    assert "no_progress:        $0.2 2s" in shown.stdout.splitlines()
    assert "TaskUpdated" in shown.stdout
    proc = fleet.worker("--id", "w1")
    wait_until(lambda: fleet.state("loop") == "failed", "the attempt stopped by the rule")
    [failed] = fleet.events(ev.TaskFailed)
    assert failed.error == "no_progress"
    assert proc.poll() is None
    shown_json = fleet.run("tasks", "show", "loop", "--json")
    assert '"no_progress": "$0.2 2s"' in shown_json.stdout


@pytest.mark.parametrize(("agent", "model", "line"), [
    # Claude Code's stream-json result: "subtype": "success", exit 0, but is_error and the
    # limit in its text; Gemini CLI's stream-json error result with a relative reset.
    ("claude", "claude", '{"type":"result","subtype":"success","is_error":true,'
     '"duration_ms":412,"num_turns":1,"result":"Claude AI usage limit reached|{epoch+2}",'
     '"session_id":"s","total_cost_usd":0}'),
    ("gemini", "gemini", '{"type":"result","status":"error","error":{"type":'
     '"TerminalQuotaError","message":"You have exhausted your capacity on this model. Your '
     'quota will reset after 2s."},"stats":{"total_tokens":0}}'),
])
def test_a_presets_json_error_result_pauses_its_model(
        fleet: Fleet, tmp_path: Path, agent: str, model: str, line: str) -> None:
    from tests.e2e.test_workspaces import standins

    env = {"PATH": f"{standins(tmp_path)}:{os.environ['PATH']}",
           "STANDIN_RECORD": str(tmp_path / "record"), "POLL_INTERVAL": "60"}
    fleet.submit("job", f"say-on 1 {line}\nsay done", agent=agent, model=model,
                 max_retries=0)
    proc = fleet.worker("--id", "w1", "--model", model, lease=30.0, exec_=None, env=env)
    wait_until(lambda: fleet.state("job") == "completed", "the task ran after the reset")
    [paused] = fleet.events(ev.ModelPaused)
    assert paused.model == model
    assert paused.until is not None
    [requeued] = fleet.events(ev.TaskRequeued)
    assert requeued.reason is RequeueReason.USAGE_LIMIT
    (_, _), (_, claimed_again) = claims_of(fleet, "job")
    assert claimed_again >= to_us(paused.until)
    assert not fleet.events(ev.TaskFailed)
    assert proc.poll() is None


def test_a_default_pause_too_long_for_a_date_is_at_most_the_longest_reset(fleet: Fleet) -> None:
    # A limit without a reset time and TRI24ES_USAGE_PAUSE far beyond any date: the pause is
    # the longest reset believed (31 days), not a worker dying on a date out of range with the
    # task left running until its lease runs out.
    fleet.submit("fix", "say-on 1 5 hour limit reached\nsay fixed", model="claude",
                 max_retries=0)
    proc = fleet.worker("--id", "w1", "--model", "claude",
                        env={"TRI24ES_USAGE_PAUSE": "99999999d"})
    wait_until(lambda: fleet.events(ev.TaskRequeued) or proc.poll() is not None,
               "the attempt requeued (or the worker ended)")
    assert proc.poll() is None, fleet.output(proc)
    [requeued] = fleet.events(ev.TaskRequeued)
    assert requeued.reason is RequeueReason.USAGE_LIMIT
    [paused] = fleet.events(ev.ModelPaused)
    assert paused.until is not None
    [pause_event] = list(fleet.services.store.read_stream(MODELS_STREAM))
    assert to_us(paused.until) - pause_event.recorded_at <= 31 * 86_400 * SECOND
    assert fleet.services.task("fix").retries_used == 0


def test_a_limit_quoted_in_the_tail_of_a_json_line_over_a_mebibyte_is_no_limit(
        fleet: Fleet, tmp_path: Path) -> None:
    # A stream-json tool result over 1 MiB reaches the worker in pieces; its last piece is
    # no plain-text line of its own: the limit text quoted in it stops nothing.
    agent = tmp_path / "big.py"
    agent.write_text(
        "import json, sys\n"
        "quote = 'The fixture reads: Claude AI usage limit reached|1755615600'\n"
        "content = 'x' * (1 << 20) + quote\n"
        "sys.stdout.write(json.dumps({'type': 'user', 'message': {'content': [\n"
        "    {'type': 'tool_result', 'content': content}]}}) + '\\n')\n"
        "print('done')\n")
    fleet.submit("big", "read the fixtures", model="claude", max_retries=0)
    proc = fleet.worker("--id", "w1", "--model", "claude", exec_=f"{sys.executable} {agent}")
    wait_until(lambda: fleet.state("big") not in ("queued", "running")
               or fleet.events(ev.TaskRequeued), "the attempt ended")
    assert not fleet.events(ev.ModelPaused)
    assert not fleet.events(ev.TaskRequeued)
    assert fleet.state("big") == "completed"
    assert proc.poll() is None
