"""The whole published contract, fuzzed by schemathesis against a served process on the demo province.

Reads go anonymous, writes with an admin key. Every response must be declared (status and content
type), match its schema, and none may be a server error; the process must still answer afterwards.
Examples are bounded so that the run stays a minute or two.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
import schemathesis.checks as checks
import schemathesis.specs.openapi.checks as oas_checks
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from gis_ioc import auth, db
from gis_ioc.web.app import openapi_document

from .conftest import demo_copy, served

EXAMPLES = 40
# What the contract promises: no server error, every status and content type declared, bodies and headers as
# described. (Whether schema-valid input is also meaningful - a layer that exists, a point in the province,
# a file in a known format - is for the service to say with a 400, so "positive data acceptance" is not asked.)
CHECKS = [checks.not_a_server_error, oas_checks.status_code_conformance, oas_checks.content_type_conformance,
          oas_checks.response_schema_conformance, oas_checks.response_headers_conformance]


@pytest.fixture(scope="module")
def fuzzed_server(server_url: str, demo_url: str, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[tuple[str, str]]:
    """A served copy of the demo (writes land in it, not in the shared demo) and an admin key."""
    with demo_copy(server_url, demo_url, "gis_ioc_test_contract") as url:
        engine = db.make_engine(url, pool_size=1)
        key = auth.create_key(engine, "contract-admin", "admin")
        engine.dispose()
        with served(url, Path(tmp_path_factory.mktemp("home"))) as base:
            yield base, key


# The document the served app publishes (the same code builds it without a database); /events is a stream
# that never ends: the events tests cover it.
schema = schemathesis.openapi.from_dict(json.loads(openapi_document())).exclude(path="/events")
# valid and invalid input both (a NUL in a parameter included): neither may hurt the server
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], allow_x00=True)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_every_operation_keeps_its_contract(case, fuzzed_server):  # type: ignore[no-untyped-def]
    base, key = fuzzed_server
    headers = {"Authorization": f"Bearer {key}"} if case.method.upper() in ("POST", "PUT", "PATCH", "DELETE") else {}
    case.call_and_validate(base_url=base, headers=headers, timeout=60, checks=CHECKS)


def test_the_server_is_still_up_after_the_fuzzing(fuzzed_server):
    base, _ = fuzzed_server
    assert httpx.get(f"{base}/health", timeout=10).status_code == 200

