"""Fuzz the review API from its own OpenAPI schema with schemathesis.

Every operation, with valid (positive) and invalid (negative) generated input, as every
role, once with free path parameters and once aimed at real candidates and users. Every
schemathesis check runs on every response: no 5xx, only documented status codes, bodies
that match the schema, invalid input rejected with a 4xx. FLYWHEEL_FUZZ_EXAMPLES sets the
examples per (operation, mode, role); the test prints the count of cases it ran.
"""

import os
from collections import Counter

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from services.api.main import create_app
from tests.api.conftest import ROLES, seed_review_store

EXAMPLES = int(os.environ.get("FLYWHEEL_FUZZ_EXAMPLES", "15"))
# Real path parameters, so the fuzzer also reaches the code behind a successful lookup.
KNOWN = {"ref": ["3", "c4", "2"], "name": ["u-engineer"], "robot_id": ["robot-00"]}


@pytest.mark.slow
def test_fuzzing_the_api_from_its_openapi_schema_finds_no_server_errors(store_settings, capsys):
    tokens = seed_review_store(store_settings)
    app = create_app()
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    TestClient(app).get("/health")  # start the app once before fuzzing
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    no_negative: set[str] = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for role in ROLES:
                headers = {"Authorization": f"Bearer {tokens[role]}"}
                known = {
                    p.name: KNOWN[p.name][0]
                    for p in operation.path_parameters
                    if p.name in KNOWN and mode is GenerationMode.POSITIVE
                }
                for path_parameters in ({}, known) if known else ({},):
                    strategy = operation.as_strategy(mode, path_parameters=path_parameters or None)
                    label = f"{operation.label} {mode.value}"
                    try:
                        _fuzz(strategy, headers, statuses, failures, label)
                    except Unsatisfiable:
                        # Nothing in the operation can be made invalid (no parameters, no body).
                        assert mode is GenerationMode.NEGATIVE, label
                        no_negative.add(operation.label)
    total = sum(statuses.values())
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    with capsys.disabled():
        print(
            f"\nschemathesis: {total} cases over {len(list(schema.get_all_operations()))} "
            f"operations, {server_errors} server errors, {len(failures)} failed checks; "
            f"statuses {dict(sorted(statuses.items()))}; no invalid input possible for "
            f"{sorted(no_negative)}"
        )
    assert not failures, "\n\n".join(failures[:5])
    assert server_errors == 0
    assert total >= EXAMPLES * 12


def _fuzz(strategy, headers, statuses: Counter, failures: list[str], label: str) -> None:
    @given(case=strategy)
    @hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case) -> None:
        response = case.call(headers=headers)
        statuses[response.status_code] += 1
        try:
            case.validate_response(response, headers=headers)
        # Every check's failure is collected (schemathesis raises them as a group), then reported.
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{label}: {exc}")

    run()
