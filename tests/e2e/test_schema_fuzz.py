"""A bounded schemathesis run against our own OpenAPI spec: whatever a client sends within
(and around) the schema, the answer is never a 5xx, and every error is OpenAI's envelope."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from live import make_settings

pytestmark = pytest.mark.filterwarnings("ignore")
EXAMPLES_PER_OPERATION = 25


def test_no_operation_answers_a_5xx(tmp_path: Path, tiny_model_dir: Path) -> None:
    import schemathesis

    from tunesmith.server import create_app

    app = create_app(make_settings(tmp_path / "home", tiny_model_dir, max_tokens_limit=4))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    failures: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case) -> None:
            headers = {**(case.headers or {}), "Authorization": "Bearer key-a"}
            response = case.call(headers=headers)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path}: {response.status_code} "
                    f"{response.text[:200]}"
                )
            elif response.status_code >= 400:
                body = response.json()
                assert set(body["error"]) == {"message", "type", "param", "code"}, body

        check()
    assert not failures, "\n".join(failures[:10])
