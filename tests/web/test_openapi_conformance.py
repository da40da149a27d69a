"""The OpenAPI document tells the truth: a bounded, seeded schemathesis run against the API.

Every operation of /api/v1 gets generated requests (valid and invalid); each response must be
documented (status code and body schema) and no request may get a 5xx. About 200 cases in all
(a fixed number per operation, derandomized so every run sends the same ones).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

CASES_PER_OPERATION = 12
# Whether Fortran is valid, or an LLM endpoint resolves to a public address, cannot be said in
# JSON Schema: these operations may refuse schema-valid input (400, documented with its reason).
CONTENT_CHECKED = {"POST /api/v1/translate", "POST /api/v1/profile", "PUT /api/v1/llm/credential"}


@pytest.fixture
def no_connection_recycling():
    """Requests run inside the test's transaction: they must not close its connection (what
    Django's own test client arranges too)."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def test_the_api_answers_as_its_openapi_document_says(
    tenant_a, make_key, no_connection_recycling, django_settings
):
    from django.core.wsgi import get_wsgi_application

    # The run sends hundreds of requests, many with wrong keys on purpose: the brute-force
    # lock-out and the rate limit are tested elsewhere and would only answer 429 here.
    django_settings.AXES_FAILURE_LIMIT = 100_000
    django_settings.FORTRANSPIRE_RATE_LIMIT_PER_MINUTE = 0

    key = make_key(tenant_a, scopes=["translate", "profile", "agent", "history", "owner"])
    headers = {"Host": "a.localhost", "Authorization": f"Bearer {key}"}
    schema = schemathesis.openapi.from_wsgi(
        "/api/v1/openapi.json", get_wsgi_application(), headers={"Host": "a.localhost"}
    )
    failures: dict[str, str] = {}
    sent = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        excluded = [positive_data_acceptance] if operation.label in CONTENT_CHECKED else []

        @given(case=operation.as_strategy())
        @settings(
            max_examples=CASES_PER_OPERATION,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case):
            nonlocal sent
            sent += 1
            case.call_and_validate(headers=headers, excluded_checks=excluded)  # noqa: B023

        try:
            check()
        except Exception as exc:  # noqa: BLE001 - collect every operation's first failure
            failures[operation.label] = str(exc)[:600]
    assert sent >= 100
    assert failures == {}, "\n\n".join(f"{k}: {v}" for k, v in failures.items())


@pytest.fixture
def django_settings(settings):
    return settings
