"""``tri24es init``: the project folders and the store."""

from __future__ import annotations

import typer

from tri24es.cli.common import context_of
from tri24es.errors import Tri24esError


def init(ctx: typer.Context) -> None:
    """Create state/, tasks/{queue,running,completed,failed,rejected}/ and the store.

    Example: tri24es --root ~/fleet init
    """
    from eventlog import redact_url
    from tri24es.files import private_folder
    from tri24es.paths import TASK_FOLDERS
    from tri24es.web.token import ensure_token_file

    context = context_of(ctx)
    s = context.settings
    paths = s.paths
    try:
        paths.root.mkdir(parents=True, exist_ok=True)  # the user's own folder, by their umask
        private_folder(paths.state, paths.root)
        for folder in TASK_FOLDERS:  # the owner's only, whatever the umask: task text is input
            private_folder(paths.tasks / folder, paths.root)
    except OSError as e:
        raise Tri24esError(f"cannot create the project in {s.root}: {e.strerror}: "
                           f"{e.filename}") from e
    with context.store(create=True) as store:
        head = store.head()
    made = ensure_token_file(paths.web_token)  # the dashboard's actions ask for it
    typer.echo(f"initialised {s.root}")
    typer.echo(f"  store:  {redact_url(s.db_url)} ({head} events)")
    typer.echo(f"  tasks:  {paths.tasks}/{{{','.join(TASK_FOLDERS)}}}/")
    typer.echo(f"  web token: {paths.web_token}{' (new)' if made else ''}")
