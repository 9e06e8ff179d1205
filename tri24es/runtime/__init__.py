"""Long-running processes: the queue watcher (and, later, the worker and budget watchdog)."""
