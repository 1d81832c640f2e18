"""Schemathesis fuzzes the HTTP API from its own OpenAPI schema, against the running server: no
500s, no hangs, and every answer is what the schema says it can be. Valid requests (the positive
phase) get what the schema promises; invalid ones (the negative phase: wrong types, missing or
unknown fields, values out of range) get a 4xx with the error body."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from tests.integration.server import running_server

# Per operation and phase; the whole file stays within about a minute on 2 cores.
EXAMPLES = 60
CALL_TIMEOUT_S = 30  # an answer slower than this fails the case: no hangs
WITH_BODIES = {"POST /v1/score", "POST /v1/rank", "POST /v1/compare", "POST /get_reward"}
@pytest.fixture(scope="module")
def api_url(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The default model is a decoder that adds no BOS, so empty texts reach it as nothing at all."""
    args = ["--model", f"llama={tiny_model_dirs['llama-left']}",
            "--model", f"bert={tiny_model_dirs['bert-right']}",
            "--max-inputs-per-request", "16", "--max-chars-per-field", "2000"]
    with running_server(args, store=tmp_path_factory.mktemp("store")) as url:
        yield url


def operations(url: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    found = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in found} >= WITH_BODIES
    return found


def is_documented_deadline(case: schemathesis.Case, response: Any) -> bool:
    """A tiny timeout_ms may well pass first: the documented 504, not a server error."""
    if response.status_code == 504 and isinstance(case.body, dict) and case.body.get("timeout_ms"):
        assert response.json()["error"]["type"] == "deadline_exceeded"
        return True
    return False


def test_the_api_answers_every_generated_request_as_its_schema_says(api_url: str) -> None:
    for operation in operations(api_url):

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None, derandomize=True)
        def answers_as_documented(case: schemathesis.Case) -> None:
            # Schema-valid requests may still be refused for reasons a schema cannot express (an
            # unknown model name, more inputs than this server takes): as documented 4xx, not 2xx.
            response = case.call(timeout=CALL_TIMEOUT_S)
            excluded = [positive_data_acceptance]
            if is_documented_deadline(case, response):
                excluded.append(not_a_server_error)
            case.validate_response(response, excluded_checks=excluded)

        answers_as_documented()


def test_every_invalid_request_gets_a_4xx_with_the_error_body(api_url: str) -> None:
    tested = set()
    for operation in operations(api_url):
        if operation.label not in WITH_BODIES:
            continue  # nothing of a GET without parameters can be invalid
        tested.add(operation.label)

        @given(case=operation.as_strategy(GenerationMode.NEGATIVE))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None, derandomize=True)
        def refused_as_documented(case: schemathesis.Case) -> None:
            response = case.call(timeout=CALL_TIMEOUT_S)
            if is_documented_deadline(case, response):
                return
            if response.status_code == 200 and any(v is None or v == [] for v in (case.query or {}).values()):
                return  # a query parameter with no value is not sent: the server saw a valid request
            where = f"{case.method} {case.path} query={case.query!r} {case.body!r}"
            assert 400 <= response.status_code < 500, f"{where}: {response.status_code} {response.text}"
            error = response.json()["error"]
            assert error["type"] and error["message"], f"{where}: {response.text}"
            excluded = [positive_data_acceptance]
            if response.status_code == 413:
                # Counts are checked before anything else (body_checks.py): too many items is a
                # 413 whatever else is wrong, a refusal schemathesis does not count as one.
                assert error["type"] == "too_many_inputs", f"{where}: {response.text}"
                excluded.append(negative_data_rejection)
            case.validate_response(response, excluded_checks=excluded)

        refused_as_documented()
    assert tested == WITH_BODIES


def test_an_unparsable_body_gets_the_documented_422(api_url: str) -> None:
    """Negative-phase fuzzing found a body that is not JSON answered 400, which no operation
    documents; now every bad body is the documented 422 invalid_request."""
    response = httpx.post(f"{api_url}/v1/score", content=b"\xff{", timeout=CALL_TIMEOUT_S,
                          headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["error"]["type"] == "invalid_request"
    paths = httpx.get(f"{api_url}/openapi.json").json()["paths"]
    undocumented = [label for label in sorted(WITH_BODIES)
                    if "422" not in paths[label.split()[1]][label.split()[0].lower()]["responses"]]
    assert not undocumented, f"422 is not among the documented responses of {undocumented}"


def test_values_of_the_wrong_type_are_refused(api_url: str) -> None:
    """Negative-phase fuzzing found values of the wrong type coerced (lax parsing): booleans and
    numeric strings taken as numbers, numbers as booleans. Each of these is schema-invalid."""
    one = {"inputs": [{"text": "x"}]}
    wrong = [("/v1/score", "priority", {**one, "priority": True}),
             ("/v1/score", "priority", {**one, "priority": "5"}),
             ("/v1/score", "timeout_ms", {**one, "timeout_ms": True}),
             ("/v1/score", "timeout_ms", {**one, "timeout_ms": "5000"}),
             ("/v1/score", "clip", {**one, "clip": True}),
             ("/v1/score", "combine", {**one, "combine": {"bert": True}}),
             ("/v1/score", "normalize", {**one, "model": "bert", "normalize": 1}),
             ("/v1/rank", "top_k", {"prompt": "p", "responses": ["a", "b"], "top_k": "1"})]
    accepted = []
    for path, field, body in wrong:
        response = httpx.post(f"{api_url}{path}", json=body, timeout=CALL_TIMEOUT_S)
        error = response.json().get("error", {})
        refused = (response.status_code, error.get("type")) == (422, "invalid_request")
        if not refused or field not in error["message"]:
            accepted.append(f"{path} {body}: {response.status_code} {response.text[:100]}")
    assert not accepted, "\n".join(accepted)
