"""The Scale benchmark harness (benchmarks/scale) at smoke sizes: tri24es and the raw
baselines always run; the peers only where their venv was made (no network here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.scale.__main__ import run
from benchmarks.scale.launch import GroupResult
from benchmarks.scale.peersenv import PeersEnv, prepare
from benchmarks.scale.report import Goal, Row, Series
from benchmarks.scale.sizes import SMOKE

NO_PEERS = PeersEnv(None, {"litequeue": "skipped (--skip-peers)"})


def test_duplicates_and_lost_jobs_are_counted_across_processes() -> None:
    result = GroupResult(5, 1.0, ["t1", "t2", "t2", "t3", "t2"], [{"peak_rss_mib": 1.0}])
    assert result.duplicates() == 2  # t2 ran three times: two runs too many
    assert result.lost(["t1", "t2", "t3", "t4"]) == 1
    assert result.rate == 5.0


def test_ratios_are_per_run_and_goals_are_judged_on_their_median() -> None:
    row = Row("f", Series("tri24es", "jobs/s", [100, 200, 300]),
              Series("peer", "jobs/s", [200, 200, 200]), Goal("ratio", ">=", 1.5))
    assert row.ratios() == [0.5, 1.0, 1.5]
    assert row.ratio == 1.0
    assert row.met() is False
    assert "**1.00x** (0.50-1.50)" in row.markdown()
    failed = Row("f", Series("tri24es", "jobs/s", [1]), Series("peer", "jobs/s", error="boom"))
    assert failed.ratio is None
    assert "failed: boom" in failed.markdown()


@pytest.mark.slow
def test_smoke_run_measures_tri24es_and_raw_and_writes_results(tmp_path: Path) -> None:
    results = run(["claims-sqlite", "appends"], SMOKE, dsn=None, peers=NO_PEERS,
                  work=tmp_path, quick=True)
    rows = [r for r in results.rows if r.figure.startswith("SQLite claim+complete")]
    assert {r.figure for r in rows} == {"SQLite claim+complete, 2 proc"}
    for row in rows:
        assert row.ours.error is None
        assert row.ours.runs
        assert row.ours.runs[0] > 0
        assert row.ours.checks["duplicates"] == 0
        assert row.ours.checks["lost"] == 0
        assert row.ours.checks["completed_twice"] == 0
        assert row.ours.checks["left_running"] == 0
    raw = [r for r in rows if r.versus is not None and r.versus.name == "raw 1-commit queue"]
    assert len(raw) == 1
    assert all(r.ratio is not None and r.ratio > 0 for r in raw)
    assert all(r.versus.checks == {"duplicates": 0, "lost": 0, "left_undone": 0}
               for r in raw if r.versus is not None)
    (append,) = [r for r in results.rows if r.figure == "SQLite single append"
                 and r.versus is not None and r.versus.name == "raw single-row INSERT"]
    assert append.ratio is not None
    assert append.ratio > 0
    assert append.ours.checks == {"missing": 0}
    peers = [r for r in rows if r.versus is not None and r.versus.name == "litequeue"]
    assert peers
    assert all(r.versus is not None and r.versus.error for r in peers)
    js, md = results.write(tmp_path / "out", "smoke")
    written = json.loads(js.read_text())
    assert set(written) == {"started", "options", "machine", "sections", "rows"}
    assert {"loadavg", "nproc", "load_before", "load_after"} <= set(written["machine"])
    assert all({"figure", "ours", "versus", "ratio", "ratio_runs", "goal", "goal_met"}
               <= set(r) for r in written["rows"])
    assert "| SQLite claim+complete, 2 proc |" in md.read_text()
    assert "litequeue not run: skipped (--skip-peers)" in md.read_text()


@pytest.mark.slow
def test_smoke_run_of_a_peer_counts_its_jobs(tmp_path: Path) -> None:
    env = prepare(install=False)
    if not env.has("litequeue"):
        pytest.skip("no peers venv (python -m benchmarks.scale makes it)")
    only = PeersEnv(env.python, {"litequeue": "ok"})
    results = run(["claims-sqlite"], SMOKE, dsn=None, peers=only, work=tmp_path, quick=True)
    (row,) = [r for r in results.rows if r.versus is not None and r.versus.name == "litequeue"]
    assert row.versus is not None
    assert row.versus.runs
    assert row.versus.error is None
    assert row.versus.checks == {"duplicates": 0, "lost": 0}
