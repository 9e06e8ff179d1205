"""The limits table as readers see it."""

from __future__ import annotations

#: A running task's value for a key: its own, else that of the worker running it.
RUNNING_VALUE = (
    "CASE l.key WHEN 'model' THEN coalesce(r.model, w.model)"
    " WHEN 'shard' THEN coalesce(r.shard, w.shard) ELSE coalesce(r.type, w.type) END")
