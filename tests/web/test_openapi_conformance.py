"""The OpenAPI document tells the truth: a bounded, seeded schemathesis run against the API.

Every operation of /api/v1 gets generated requests (valid and invalid); each response must be
documented (status code and body schema) and no request may get a 5xx.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

pytestmark = pytest.mark.django_db


@pytest.fixture
def api_schema(tenant_a):
    from django.core.signals import request_finished, request_started
    from django.core.wsgi import get_wsgi_application
    from django.db import close_old_connections

    # As Django's test client does: requests run inside the test's transaction, so they must
    # not close its connection.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield schemathesis.openapi.from_wsgi(
        "/api/v1/openapi.json", get_wsgi_application(), headers={"Host": "a.localhost"}
    )
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=15,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_answers_as_its_openapi_document_says(case, tenant_a, make_key):
    key = make_key(tenant_a, scopes=["translate", "profile", "agent", "history", "owner"])
    case.call_and_validate(headers={"Host": "a.localhost", "Authorization": f"Bearer {key}"})
