"""Schemathesis against ``/openapi.json``: generated requests to every operation never get a 5xx.

Requests carry a valid API key and a valid worker token, and name the real project, so the
generated bodies and parameters reach the handlers instead of stopping at 401/404. Rate limits
are off here (a fuzzer is a flood by design; tests/test_server_hardening.py covers them); the
body-size limit stays on. Generated strings hold a NUL or a lone surrogate too seldom to find what
those break, so one pass puts one into every string of every generated body.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from crowdpatch.server.app import create_app

MAX_EXAMPLES = 25
GENERATED_CREDENTIAL_EXAMPLES = 10
"""Cases per operation with the key and token headers as generated: mostly 401s, which must stay 401s."""


def fuzzed(config) -> None:
    config.crowd.gold_rate = 0.05
    config.server.rate_limit_worker_per_second = 0
    config.server.rate_limit_ip_per_second = 0


@pytest.fixture
def served_schema(make_project):
    project = make_project(n_images=3, size=48, configure=fuzzed)
    app = create_app(project)
    with TestClient(app) as client:
        opened = client.post(
            f"/api/v1/projects/{project.config.name}/sessions",
            json={"platform": "prolific", "worker_id": "fuzzer", "study_id": "s", "session_id": "x"},
        )
        assert opened.status_code == 201
        client.post(
            f"/api/v1/projects/{project.config.name}/polygon-tasks",
            headers={"X-API-Key": project.config.server.effective_api_key()},
        )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    schema.app = app  # type: ignore[attr-defined]
    schema.credentials = {  # type: ignore[attr-defined]
        "X-API-Key": project.config.server.effective_api_key(),
        "Authorization": f"Bearer {opened.json()['token']}",
        "project": project.config.name,
    }
    return schema


def operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


def fuzz(schema, max_examples: int, credentials: dict[str, str] | None) -> Counter[str]:
    """Every operation, ``max_examples`` generated cases each (derandomized: the same cases on every run).

    Driven with Hypothesis directly over each operation's strategy: schemathesis's lazy pytest
    fixture loader relies on a pytest internal that pytest 9 removed. With ``credentials``, the
    generated key and token headers are replaced by valid ones; without, they are sent as generated.
    """
    project = schema.credentials["project"]
    calls: Counter[str] = Counter()
    for operation in operations(schema):

        @settings(
            max_examples=max_examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        @given(case=operation.as_strategy())
        def no_server_error(case) -> None:
            if case.path_parameters and "project" in case.path_parameters:
                case.path_parameters["project"] = project
            calls[f"{case.method} {case.path}"] += 1
            case.call_and_validate(headers=credentials, checks=[not_a_server_error])

        no_server_error()
    print(
        f"\nschemathesis: {sum(calls.values())} requests over {len(calls)} operations, max_examples={max_examples}, "
        f"credentials {'valid' if credentials else 'as generated'}"
    )
    for name, count in sorted(calls.items()):
        print(f"  {count:4d}  {name}")
    return calls


def test_no_generated_request_with_valid_credentials_gets_a_server_error(served_schema):
    credentials = served_schema.credentials
    calls = fuzz(
        served_schema,
        MAX_EXAMPLES,
        {"X-API-Key": credentials["X-API-Key"], "Authorization": credentials["Authorization"]},
    )
    assert len(calls) == len(operations(served_schema)) >= 10


def test_no_generated_credentials_get_a_server_error(served_schema):
    calls = fuzz(served_schema, GENERATED_CREDENTIAL_EXAMPLES, None)
    assert len(calls) == len(operations(served_schema)) >= 10


HOSTILE_CHARACTERS = ("\x00", "\ud800", "\udfff")
"""NUL (PostgreSQL refuses it) and lone surrogates (valid JSON escapes of no Unicode text)."""


def with_character(value, character: str):
    """``value`` with ``character`` put into the middle of every string it holds (keys aside)."""
    if isinstance(value, str):
        return value[: len(value) // 2] + character + value[len(value) // 2 :]
    if isinstance(value, dict):
        return {key: with_character(item, character) for key, item in value.items()}
    if isinstance(value, list):
        return [with_character(item, character) for item in value]
    return value


def test_no_body_with_a_nul_or_a_lone_surrogate_in_its_strings_gets_a_server_error(served_schema):
    """Every operation with a JSON body, its generated bodies sent with one hostile character in every string.

    Sent by a plain client (JSON text with the surrogate escaped, as any client's encoder writes it):
    schemathesis itself re-validates a case's strings as UTF-8 before sending it.
    """
    credentials = served_schema.credentials
    headers = {
        "X-API-Key": credentials["X-API-Key"],
        "Authorization": credentials["Authorization"],
        "Content-Type": "application/json",
    }
    statuses: Counter[tuple[str, int]] = Counter()
    with TestClient(served_schema.app, raise_server_exceptions=False) as client:
        for operation in operations(served_schema):
            if not operation.body:
                continue

            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            @given(case=operation.as_strategy(), character=st.sampled_from(HOSTILE_CHARACTERS))
            def no_server_error(case, character: str) -> None:
                if case.path_parameters and "project" in case.path_parameters:
                    case.path_parameters["project"] = credentials["project"]
                body = json.dumps(with_character(case.body, character))
                response = client.request(
                    case.method, case.formatted_path, params=case.query, headers=headers, content=body
                )
                statuses[(f"{case.method} {case.path}", response.status_code)] += 1
                assert response.status_code < 500, (case.method, case.formatted_path, body, response.text)
                response.json()  # every answer, 422s included, is JSON

            no_server_error()
    print("\nschemathesis bodies with NUL or a lone surrogate in every string:")
    for (name, status), count in sorted(statuses.items()):
        print(f"  {count:4d}  {status}  {name}")
    names = {name for name, _ in statuses}
    assert {"POST /api/v1/answers", "POST /api/v1/projects/{project}/sessions"} <= names
