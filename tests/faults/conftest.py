"""The consultation fixtures (one database, data dir, API and users per module) for the fault tests."""

from __future__ import annotations

import pytest

from tests.consultation.conftest import api, settings, tokens  # noqa: F401 - fixtures shared with these tests


@pytest.fixture(scope="module")
def consultation(api, tokens) -> str:  # noqa: F811
    r = api.post("/v1/consultations", json={"title": "faults"}, headers=tokens["ann"])
    assert r.status_code == 201, r.text
    return r.json()["id"]
