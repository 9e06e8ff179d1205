"""Who may read and act: the token, CSRF, Origin, the Host header, escaping, the actor."""

from __future__ import annotations

import stat

import orjson
import pytest

from tests.web.conftest import Server, start_server, stop_server
from tri24es.web.token import derive

XSS = "<script>alert('owned')</script><img src=x onerror=alert(1)>"


# One server per module, kept in one test process where xdist can (see test_api.py).
pytestmark = pytest.mark.xdist_group("web-security")


def _cancelled(server: Server, task_id: str) -> list[dict[str, object]]:
    return [orjson.loads(e.metadata) for e in server.events("TaskCancelled")
            if e.stream == f"task-{task_id}"]


def test_the_token_file_is_the_owners_alone(server: Server) -> None:
    mode = (server.root / "state" / "web-token").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert len(server.token) >= 32


def test_actions_need_the_token(server: Server) -> None:
    assert server.cli("submit", "Guarded", "--id", "guarded").returncode == 0
    missing = server.post_json("/api/tasks/guarded/cancel", {})
    assert missing.status == 401
    assert "need the token" in missing.json()["error"]
    wrong = server.post_json("/api/tasks/guarded/cancel", {},
                             authorization="Bearer not-the-token")
    assert wrong.status == 403
    cookie_only = server.post_form("/api/tasks/guarded/cancel", {},
                                   cookie=f"tri24es_session={derive(server.token, 'session')}")
    assert cookie_only.status == 403  # the cookie alone is not enough: the CSRF field is missing
    assert server.get("/api/killswitch/reset").status == 405  # actions are POST only
    assert server.get("/api/tasks/guarded/cancel").status == 404  # a GET reads: no such task
    assert _cancelled(server, "guarded") == []
    done = server.post_json("/api/tasks/guarded/cancel", {"reason": "by the API"},
                            authorization=f"Bearer {server.token}")
    assert done.status == 200
    assert done.json() == {"task_id": "guarded", "state": "cancelled"}
    (metadata,) = _cancelled(server, "guarded")
    assert metadata["actor"] == "web:127.0.0.1"


def test_a_signed_in_form_post_acts_and_returns_to_its_page(server: Server) -> None:
    assert server.cli("submit", "By form", "--id", "by-form").returncode == 0
    signed_in = server.post_form("/login", {"token": server.token, "back": "/tasks"})
    assert signed_in.status == 303
    assert signed_in.headers["location"] == "/tasks"
    cookie = signed_in.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert server.token not in cookie
    session = cookie.split(";")[0]
    page = server.get("/tasks/by-form", cookie=session).text
    csrf = derive(server.token, "csrf")
    assert f'value="{csrf}"' in page  # the page carries the CSRF field once signed in
    done = server.post_form("/api/tasks/by-form/cancel",
                            {"csrf": csrf, "back": "/tasks/by-form"}, cookie=session,
                            origin=server.url)
    assert done.status == 303
    assert done.headers["location"] == "/tasks/by-form"
    assert len(_cancelled(server, "by-form")) == 1
    assert server.post_form("/login", {"token": "wrong"}).status == 403


def test_a_cross_site_form_post_is_refused(server: Server) -> None:
    assert server.cli("submit", "Cross site", "--id", "cross").returncode == 0
    session = f"tri24es_session={derive(server.token, 'session')}"
    fields = {"csrf": derive(server.token, "csrf")}
    # Even with the cookie and the field (as if the attacker had both), another origin is out.
    for headers in ({"origin": "http://evil.example"},
                    {"origin": "http://127.0.0.1:1"},  # same site, another origin
                    {"referer": "http://evil.example/page"},
                    {"sec-fetch-site": "cross-site"},
                    {"sec-fetch-site": "same-site"}):
        answer = server.post_form("/api/tasks/cross/cancel", fields, cookie=session,
                                  **headers)
        assert answer.status == 403, headers
        assert "cross-site" in answer.text
    assert _cancelled(server, "cross") == []


def test_a_foreign_host_header_is_refused_on_loopback(server: Server) -> None:
    """DNS rebinding: a page of evil.example whose name now points at 127.0.0.1."""
    assert server.get("/api/status", host="evil.example").status == 400
    assert server.get("/api/status", host="localhost").status == 200


def test_task_text_is_escaped_everywhere(server: Server) -> None:
    assert server.cli("submit", XSS, "--id", "xss", "--model", "<b>bold</b>").returncode == 0
    for path in ("/tasks", "/tasks/xss", "/events", "/", "/tasks?q=script"):
        answer = server.get(path)
        assert answer.status == 200, path
        assert "<script>alert" not in answer.text, path
        assert "<img src=x" not in answer.text, path
        assert "<b>bold" not in answer.text, path
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp  # and no inline script would run even if one got in
    assert "&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;" in server.get("/tasks").text


def test_bound_beyond_loopback_reading_needs_the_token(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    exposed = start_server(tmp_path_factory.mktemp("exposed") / "fleet", "--host", "0.0.0.0",
                           env={"TRI24ES_WEB_TOKEN": "a-token-from-the-environment"})
    try:
        said = "".join(exposed.output)
        assert "bound beyond loopback (0.0.0.0): reading needs the token too" in said
        assert exposed.get("/api/status").status == 401
        assert exposed.get("/api/status", authorization="Bearer wrong").status == 403
        page = exposed.get("/tasks", accept="text/html")  # a browser is sent to sign in
        assert page.status == 303
        assert page.headers["location"] == "/login?next=%2Ftasks"
        assert exposed.get("/tasks").status == 401
        assert exposed.get("/live").status == 401
        assert exposed.get("/api/status",
                           authorization="Bearer a-token-from-the-environment").status == 200
        session = f"tri24es_session={derive('a-token-from-the-environment', 'session')}"
        assert exposed.get("/tasks", cookie=session).status == 200
        assert exposed.get("/login").status == 200
    finally:
        stop_server(exposed)
