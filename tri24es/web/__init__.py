"""The web dashboard and its JSON API (``tri24es serve``).

Pages and ``/api/...`` read the views through ``projections.reads`` and the log; actions go
through the same service calls as the CLI. ``token`` is standard library only (``init``
uses it); the rest needs Starlette, uvicorn and Jinja2 and is imported by ``serve`` alone.
"""
