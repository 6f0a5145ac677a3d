"""Fuzz the review API from its own OpenAPI schema with schemathesis.

Every operation, with valid (positive) and invalid (negative) generated input, as every
role, once with free path parameters and once aimed at real candidates and users. The
robot-facing operations instead as robots: with no credential (only ever 401), with another
robot's (only ever 403), and with the robot's own. Every schemathesis check runs on every
response: no 5xx, only documented status codes, bodies that match the schema, invalid input
rejected with a 4xx. FLYWHEEL_FUZZ_EXAMPLES sets the examples per (operation, mode, caller);
the test prints the count of cases it ran.
"""

import os
from collections import Counter

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import positive_data_acceptance
from schemathesis.generation import GenerationMode

from services.api.lockout import Lockout
from services.api.main import create_app
from tests.api.conftest import ROLES, enroll_robots, seed_review_store

EXAMPLES = int(os.environ.get("FLYWHEEL_FUZZ_EXAMPLES", "15"))
# Real path parameters, so the fuzzer also reaches the code behind a successful lookup.
KNOWN = {"ref": ["3", "c4", "2"], "name": ["u-engineer"], "robot_id": ["robot-00"]}
# Robots of their own for the robot-facing operations (the admins' fuzzing rotates and revokes
# robot-00's credential as it goes); "robot-self" is also their real path parameter.
SELF, OTHER = "robot-self", "robot-other"


def _robot_facing(operation) -> bool:
    return operation.path.startswith("/robots/{robot_id}/") and not operation.path.endswith(
        "/credential"
    )


@pytest.mark.slow
def test_fuzzing_the_api_from_its_openapi_schema_finds_no_server_errors(store_settings, capsys):
    tokens = seed_review_store(store_settings)
    robots = enroll_robots(store_settings, [SELF, OTHER])
    app = create_app()
    # The fuzzer sends thousands of bad credentials on purpose; the lockout (tested in
    # tests/api/test_lockout.py) would answer most of them 429 before they reach a route.
    app.state.lockout = Lockout(failures=10**9, window_s=1, lockout_s=1)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    TestClient(app).get("/health")  # start the app once before fuzzing
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    no_negative: set[str] = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        if _robot_facing(operation):
            callers = {
                "no credential": ({}, {401}, {}),
                # 401 too in negative mode, which also makes the credential itself invalid
                "another robot": (_bearer(robots[OTHER]), {403}, {}),
                "the robot": (_bearer(robots[SELF]), None, {"robot_id": SELF}),
            }
        else:
            known = {p.name: KNOWN[p.name][0] for p in operation.path_parameters if p.name in KNOWN}
            callers = {role: (_bearer(tokens[role]), None, known) for role in ROLES}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for caller, (headers, only, known) in callers.items():
                if mode is GenerationMode.NEGATIVE:
                    known = {}
                for path_parameters in ({}, known) if known else ({},):
                    strategy = operation.as_strategy(mode, path_parameters=path_parameters or None)
                    label = f"{operation.label} {mode.value} as {caller}"
                    answered: Counter[int] = Counter()
                    # Counts the schema allows can still be implausible for the time reported:
                    # a heartbeat's 422 for those is the robot's fault, not the schema's.
                    excluded = [positive_data_acceptance] if caller == "the robot" else []
                    try:
                        _fuzz(strategy, headers, answered, failures, label, excluded)
                    except Unsatisfiable:
                        # Nothing in the operation can be made invalid (no parameters, no body).
                        assert mode is GenerationMode.NEGATIVE, label
                        no_negative.add(operation.label)
                    statuses.update(answered)
                    if mode is GenerationMode.NEGATIVE and only == {403}:
                        only = {401, 403}
                    if only is not None and set(answered) - only:
                        failures.append(f"{label}: answered {dict(answered)}, not only {only}")
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


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _fuzz(
    strategy, headers, statuses: Counter, failures: list[str], label: str, excluded: list
) -> None:
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
            case.validate_response(response, headers=headers, excluded_checks=excluded)
        # Every check's failure is collected (schemathesis raises them as a group), then reported.
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{label}: {exc}")

    run()
