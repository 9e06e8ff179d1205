"""``reads.task_page``: the dashboard's task list, on both backends: filters, text with LIKE's
own characters in it, keyset pages."""

from __future__ import annotations

from collections.abc import Callable

from eventlog import open_store
from tri24es.names import Priority
from tri24es.projections import connection_of, reads
from tri24es.services import Services, TaskSpec


def test_filters_and_pages_on_both_backends(new_url: Callable[[], str]) -> None:
    with open_store(new_url()) as store:
        services = Services(store, actor="test")
        titles = ["Fix 100% of it", "fix_the_login", "Fix the logout", "Docs", "FIX\\PATH"]
        services.submit_many([
            TaskSpec(task_id=f"t{n}", title=title, priority=list(Priority)[n % 4],
                     model="claude" if n % 2 else None)
            for n, title in enumerate(titles)])
        services.cancel("t3", by="test")
        with store.snapshot() as tx:
            conn = connection_of(tx)

            def ids(**filters: object) -> list[str]:
                return [r.task_id for r in reads.task_page(conn, **filters)]  # type: ignore[arg-type]

            assert ids() == ["t4", "t3", "t2", "t1", "t0"]  # newest first
            assert ids(text="FIX") == ["t4", "t2", "t1", "t0"]  # any case, id or title
            assert ids(text="100%") == ["t0"]  # % and _ are themselves, not wildcards
            assert ids(text="x_t") == ["t1"]
            assert ids(text="x\\p") == ["t4"]
            assert ids(text="T3") == ["t3"]
            assert ids(state="cancelled") == ["t3"]
            assert ids(state="queued", model="claude") == ["t1"]
            assert ids(priority=Priority.HIGH.rank) == ["t1"]
            first = reads.task_page(conn, limit=2)
            assert [r.task_id for r in first] == ["t4", "t3"]
            assert ids(before=first[-1].submitted_position, limit=2) == ["t2", "t1"]
