"""Who may read and who may act, and who did.

- Bound to loopback, reading needs nothing (the Host header must name the loopback, so a
  page of another site cannot read through DNS rebinding); bound beyond, reading needs the
  token too.
- Every action needs the token: as ``Authorization: Bearer`` (scripts), or the session cookie
  set by ``/login`` together with the page's CSRF field (browsers). Actions are POST only and
  refused when the request says it came from another site (Origin, Sec-Fetch-Site).
- The cookie is HttpOnly and SameSite=Strict and holds a value derived from the token.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request

from tri24es.web.token import derive, same

COOKIE = "tri24es_session"
CSRF_FIELD = "csrf"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback one."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(found) and all(ipaddress.ip_address(a[4][0]).is_loopback for a in found)


class Refused(Exception):
    """A request without the right to what it asked: ``status`` 401 (no proof given) or 403."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Guard:
    token: str
    loopback: bool
    host: str = "127.0.0.1"  # as bound

    @property
    def allowed_hosts(self) -> list[str]:
        """Host headers served: on loopback, only the loopback's names (DNS rebinding)."""
        return [*LOOPBACK_HOSTS, self.host] if self.loopback else ["*"]

    @property
    def session(self) -> str:
        return derive(self.token, "session")

    @property
    def csrf(self) -> str:
        return derive(self.token, "csrf")

    @property
    def reading_needs_token(self) -> bool:
        return not self.loopback

    def bearer(self, request: Request) -> str | None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None

    def signed_in(self, request: Request) -> bool:
        """The request holds the token: its bearer header or the session cookie."""
        return same(self.bearer(request), self.token) or same(
            request.cookies.get(COOKIE), self.session)

    def check_read(self, request: Request) -> None:
        if not self.reading_needs_token or self.signed_in(request):
            return
        if self.bearer(request) is None and COOKIE not in request.cookies:
            raise Refused(401, "this dashboard is bound beyond loopback: reading needs the token")
        raise Refused(403, "wrong token")

    def check_same_site(self, request: Request) -> None:
        """Refuse a request a browser says came from another site."""
        if request.headers.get("sec-fetch-site", "same-origin") not in (
                "same-origin", "none"):
            raise Refused(403, "cross-site request refused")
        origin = request.headers.get("origin")
        if origin is None:
            referer = request.headers.get("referer")
            if referer is None:
                return  # not a browser's form post (curl, scripts): the token decides
            parts = urlsplit(referer)
            origin = f"{parts.scheme}://{parts.netloc}"
        if origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
            raise Refused(403, f"cross-site request refused (origin {origin})")

    def check_action(self, request: Request, csrf: str | None) -> None:
        """An action: same site, and the bearer token, or the cookie with the CSRF field."""
        self.check_same_site(request)
        bearer = self.bearer(request)
        if bearer is not None:
            if not same(bearer, self.token):
                raise Refused(403, "wrong token")
            return
        cookie = request.cookies.get(COOKIE)
        if cookie is None:
            raise Refused(401, "actions need the token: sign in at /login, or send "
                               "Authorization: Bearer TOKEN")
        if not same(cookie, self.session):
            raise Refused(403, "wrong token")
        if not same(csrf, self.csrf):
            raise Refused(403, "missing or wrong CSRF field")


def actor(request: Request) -> str:
    """Who acted, for the event's metadata: ``web:<remote address>``."""
    return f"web:{request.client.host if request.client else 'unknown'}"
