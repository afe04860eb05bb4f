"""The API's OpenAPI schema, exercised by schemathesis against `charter ui` on a real store: whatever
it sends within (and around) the schema, the server answers with JSON and never fails (no 5xx).

The live stream (it never ends) is left out; tests/integration/test_web_api.py reads it.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings

from charter import Charter
from tests.webserver import AUTH, TOOLS, ThreadedUI


def test_the_api_never_fails_and_always_answers_json(db_path: Any) -> None:
    db = db_path
    with Charter(db, tools=TOOLS) as charter:  # a few runs to find: succeeded, failed
        charter.run_sync({"goal": "g", "steps": [{"id": "a", "tool": "echo", "args": {"text": "hi"}}]})
        charter.run_sync({"goal": "f", "steps": [{"id": "b", "tool": "fragile", "args": {"text": "x"}}]})
    with ThreadedUI(db) as ui:
        schema = schemathesis.openapi.from_url(f"{ui.url}/openapi.json", headers=AUTH).exclude(path_regex="stream")
        tried = []
        for found in schema.get_all_operations():
            operation = found.ok()
            tried.append(operation.label)

            @given(case=operation.as_strategy())
            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def answers_json(case: Any) -> None:
                response = case.call(headers=AUTH)
                assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:500]}"
                kind = response.headers.get("content-type") or [""]
                assert kind[0].startswith("application/json"), response.text[:200]
                body = response.json()
                if response.status_code >= 400:
                    assert isinstance(body.get("error"), str) and body["error"], body

            answers_json()
    assert len(tried) >= 12 and "POST /api/runs/{run_id}/approve" in tried, tried
