"""The browser console's files, through the real app: served at /console/ with the right content types, the
strict Content-Security-Policy on each, and nothing in them that the policy would block (inline scripts or
styles, event-handler attributes, other origins)."""

from __future__ import annotations

import re

import pytest

ASSETS = {
    "console.js": "text/javascript",
    "capture-worklet.js": "text/javascript",
    "console.css": "text/css",
}


def _directives(csp: str) -> dict[str, list[str]]:
    out = {}
    for part in csp.split(";"):
        name, *values = part.split()
        out[name] = values
    return out


def _strict(r) -> None:
    csp = _directives(r.headers["content-security-policy"])
    assert csp["default-src"] == ["'self'"] and csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'", "ws://testserver", "wss://testserver"]
    assert csp["media-src"] == ["'self'", "blob:"] and csp["worker-src"] == ["'self'", "blob:"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "microphone=(self)" in r.headers["permissions-policy"]


def test_console_redirects_to_its_page_which_is_html_under_the_csp(client) -> None:
    r = client.get("/console", follow_redirects=False)
    assert r.status_code == 308 and r.headers["location"] == "console/"
    page = client.get("/console")  # followed
    assert page.status_code == 200 and str(page.url).endswith("/console/")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    _strict(page)
    html = page.text
    # Every script is an external file of this origin; no inline code or style the policy would refuse.
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="' in attrs and not body.strip() for attrs, body in scripts)
    assert "<style" not in html and not re.search(r"\sstyle\s*=", html)
    assert not re.search(r"\son[a-z]+\s*=", html), "an inline event handler"
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "a resource from another origin"
    for name in ("console.js", "console.css"):
        assert f'"{name}"' in html
    assert 'for="username"' in html and 'for="password"' in html  # labelled inputs


@pytest.mark.parametrize("name", sorted(ASSETS))
def test_each_asset_has_its_content_type_and_the_csp(client, name: str) -> None:
    r = client.get(f"/console/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"].split(";")[0] == ASSETS[name]
    assert r.headers["cache-control"] == "no-cache"
    _strict(r)
    body = r.text
    assert "http://" not in body and "https://" not in body, "the console fetches nothing from elsewhere"
    if name.endswith(".js"):
        assert "eval(" not in body and "new Function" not in body and "innerHTML" not in body


@pytest.mark.parametrize("path", ["/console/nothing.js", "/console/..%2Fmain.py", "/console/__init__.py"])
def test_only_the_console_files_are_served(client, path: str) -> None:
    assert client.get(path).status_code == 404
