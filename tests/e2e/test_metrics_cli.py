"""``tri24es metrics``: a real server process scraped over HTTP, then stopped with SIGTERM."""

from __future__ import annotations

import re
import selectors
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.e2e.conftest import CLI, clean_env
from tests.e2e.test_top import populate
from tri24es.timeutil import now_us

DEADLINE_S = 60


def first_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout=DEADLINE_S):
            raise AssertionError("the metrics server printed nothing")
    return proc.stdout.readline()


def sample(text: str, name: str, **labels: str) -> float:
    label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = "^" + re.escape(name + (f"{{{label_text}}}" if labels else "")) + r" (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    assert found is not None, f"no {name} {labels}"
    return float(found.group(1))


def test_metrics_are_served_from_the_views_and_sigterm_exits_0(tmp_path: Path) -> None:
    root = tmp_path / "fleet"
    populate(root / "state" / "tri24es.db", at=now_us())
    proc = subprocess.Popen(
        [*CLI, "metrics", "--port", "0"], cwd=tmp_path, env=clean_env(root),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = first_line(proc)
        found = re.fullmatch(r"serving metrics on (http://127\.0\.0\.1:\d+/metrics)\n", line)
        assert found is not None, line
        started = time.monotonic()
        with urllib.request.urlopen(found.group(1), timeout=DEADLINE_S) as response:
            assert response.status == 200
            text = response.read().decode()
        scrape_s = time.monotonic() - started
        assert sample(text, "tri24es_queue_tasks", state="queued", priority="LOW") == 1
        assert sample(text, "tri24es_queue_tasks", state="running", priority="CRITICAL") == 1
        assert sample(text, "tri24es_queue_tasks", state="failed", priority="HIGH") == 0
        assert sample(text, "tri24es_workers", state="busy") == 1
        assert sample(text, "tri24es_workers", state="idle") == 1
        assert sample(text, "tri24es_task_claims_total") == 3
        assert sample(text, "tri24es_task_completions_total") == 1
        assert sample(text, "tri24es_task_failures_total") == 1
        assert sample(text, "tri24es_events_total", type="TaskSubmitted") == 4
        assert sample(text, "tri24es_spend_usd_total") == 2.75
        # $0.50 was spent 30 s ago: $0.10/min over the default 300 s window
        assert sample(text, "tri24es_spend_rate_usd_per_minute") == 0.1
        assert sample(text, "tri24es_spend_rate_limit_usd_per_minute") == 1.0
        assert sample(text, "tri24es_kill_switch_active") == 1
        assert scrape_s < 30  # answers, not stuck behind the store
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def test_a_taken_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    import socket

    root = tmp_path / "fleet"
    populate(root / "state" / "tri24es.db")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*CLI, "metrics", "--port", str(port)], env=clean_env(root),
            capture_output=True, text=True, timeout=DEADLINE_S, check=False,
        )
    assert result.returncode == 2
    assert result.stderr.startswith(f"tri24es: error: cannot listen on 127.0.0.1:{port}")


def test_event_counts_follow_the_log_reading_only_new_events(tmp_path: Path) -> None:
    import eventlog
    from eventlog import NewEvent
    from tri24es.metrics import EventCounter

    with eventlog.open_store(str(tmp_path / "log.db")) as store:
        store.append("x", [NewEvent("TaskClaimed", b"{}"), NewEvent("Other", b"{}")])
        counter = EventCounter(store)
        assert counter.counts() == {"TaskClaimed": 1}
        store.append("y", [NewEvent("Other", b"{}")])
        assert counter.counts() == {"TaskClaimed": 1}
        assert counter._position == 3  # past events of no counted type too
        store.append("x", [NewEvent("TaskClaimed", b"{}"), NewEvent("TaskFailed", b"{}")])
        assert counter.counts() == {"TaskClaimed": 2, "TaskFailed": 1}
