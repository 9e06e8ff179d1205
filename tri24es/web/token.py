"""The dashboard's secret: made by ``init`` into a 0600 file, or given as ``TRI24ES_WEB_TOKEN``.

Standard library only: ``init`` makes the file without loading the web stack. What a browser
holds is never the token itself but values derived from it (a session cookie, a form's CSRF
field), so a cookie or a page's source does not give the token away.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

ENV = "TRI24ES_WEB_TOKEN"


def ensure_token_file(path: Path) -> bool:
    """Write a new random token to ``path`` (0600, never through a symlink) unless it exists;
    True if it was made."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    return True


def load_token(path: Path) -> str:
    """``TRI24ES_WEB_TOKEN`` if set, else the token file's (made first if missing)."""
    given = os.environ.get(ENV, "").strip()
    if given:
        return given
    from tri24es.files import private_fd

    ensure_token_file(path)
    # only a regular file of this user's (UnsafeFolder otherwise): a FIFO hung `serve`, and a
    # token file someone else made is a token someone else knows
    fd = private_fd(path, os.O_RDONLY, folder=False)
    with os.fdopen(fd) as f:
        token = f.read().strip()
    if not token:
        raise ValueError(f"{path} is empty: delete it and run `tri24es init` to make a token")
    return token


def derive(token: str, purpose: str) -> str:
    """A value standing for the token in one role (``session``, ``csrf``)."""
    return hmac.new(token.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
