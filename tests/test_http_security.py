"""The HTTP edge, through the real app: security headers on every response, CORS only from the allow-list,
request ids kept or made and returned."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.main import create_app


def _directives(csp: str) -> dict[str, list[str]]:
    out = {}
    for part in csp.split(";"):
        name, *values = part.split()
        out[name] = values
    return out


def test_security_headers_on_api_responses(client):
    for r in (client.get("/healthz"), client.get("/v1/auth/me"), client.get("/no/such/route")):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["x-frame-options"] == "DENY"
        assert "microphone=(self)" in r.headers["permissions-policy"]
        csp = _directives(r.headers["content-security-policy"])
        assert csp["default-src"] == ["'self'"]
        assert csp["script-src"] == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval'
        assert csp["frame-ancestors"] == ["'none'"]
        assert csp["media-src"] == ["'self'", "blob:"]
        assert csp["worker-src"] == ["'self'", "blob:"]
        assert csp["object-src"] == ["'none'"]
        assert csp["connect-src"] == ["'self'", "ws://testserver", "wss://testserver"]
        assert not any("unsafe" in v or v == "*" for values in csp.values() for v in values)


def test_a_hostile_host_header_adds_no_directive(client):
    r = client.get("/healthz", headers={"Host": "evil.example; script-src *"})
    csp = _directives(r.headers["content-security-policy"])
    assert csp["connect-src"] == ["'self'"] and csp["script-src"] == ["'self'"]


def test_the_docs_page_keeps_every_header_but_the_csp(client):
    # FastAPI's Swagger page bootstraps with an inline script: a strict CSP would blank it.
    r = client.get("/docs")
    assert r.status_code == 200
    assert "content-security-policy" not in r.headers
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"


def test_request_id_is_made_or_kept(client):
    made = client.get("/healthz").headers["x-request-id"]
    assert len(made) == 32 and made != client.get("/healthz").headers["x-request-id"]
    assert client.get("/healthz", headers={"X-Request-ID": "lb-abc.123_x"}).headers["x-request-id"] == "lb-abc.123_x"
    # Something that is not a plain token (spaces, a log-line break, too long) is replaced, not echoed.
    for bad in ("two words", "a" * 65, "x\ty"):
        got = client.get("/healthz", headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert got != bad and len(got) == 32


def test_no_cors_by_default(client):
    r = client.options(
        "/v1/auth/me", headers={"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "GET"}
    )
    assert "access-control-allow-origin" not in r.headers
    r = client.get("/healthz", headers={"Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in r.headers


def test_cors_from_the_allow_list_only(settings):
    allowed = "https://console.clinic.example"
    s = settings.model_copy(update={"cors_origins": f"{allowed}, http://127.0.0.1:5173/"})
    with TestClient(create_app(s)) as c:
        pre = c.options(
            "/v1/auth/me",
            headers={
                "Origin": allowed,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == allowed
        assert "authorization" in pre.headers["access-control-allow-headers"].lower()
        r = c.get("/healthz", headers={"Origin": "http://127.0.0.1:5173"})
        assert r.headers["access-control-allow-origin"] == "http://127.0.0.1:5173"
        assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
        refused = c.options(
            "/v1/auth/me", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
        )
        assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
        assert (
            "access-control-allow-origin" not in c.get("/healthz", headers={"Origin": "https://evil.example"}).headers
        )


@pytest.mark.parametrize("value", ["*", "https://a.example,*"])
def test_a_wildcard_origin_is_refused_by_the_settings(value):
    from pydantic import ValidationError

    from workers.core.settings import Settings

    with pytest.raises(ValidationError, match="never '\\*'"):
        Settings(cors_origins=value)
