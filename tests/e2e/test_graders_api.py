"""/v1/fine_tuning/alpha/graders/validate and /run through the official SDK."""

from __future__ import annotations

import openai
import pytest
from live import Live

pytestmark = pytest.mark.filterwarnings("ignore")

CHECK = {
    "type": "string_check",
    "name": "label",
    "operation": "eq",
    "input": "{{sample.output_json.category}}",
    "reference": "{{item.label}}",
}


def test_graders_validate_and_run_through_the_sdk(live: Live) -> None:
    client = live.client()
    assert client.fine_tuning.alpha.graders.validate(grader=CHECK).grader.type == "string_check"
    good = client.fine_tuning.alpha.graders.run(
        grader=CHECK, model_sample='{"category": "billing"}', item={"label": "billing"}
    )
    assert good.reward == 1.0 and not good.metadata.errors.sample_parse_error
    bad = client.fine_tuning.alpha.graders.run(
        grader=CHECK, model_sample="not json", item={"label": "billing"}
    )
    assert bad.reward == 0.0 and bad.metadata.errors.sample_parse_error
    multi = {
        "type": "multi",
        "name": "both",
        "calculate_output": "0.5 * label + 0.5 * sim",
        "graders": {
            "label": CHECK,
            "sim": {
                "type": "text_similarity",
                "name": "sim",
                "evaluation_metric": "fuzzy_match",
                "input": "{{sample.output_text}}",
                "reference": "{{item.answer}}",
            },
        },
    }
    out = client.fine_tuning.alpha.graders.run(
        grader=multi,
        model_sample='{"category": "billing"}',
        item={"label": "billing", "answer": '{"category": "billing"}'},
    )
    assert out.reward == pytest.approx(1.0)

    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.alpha.graders.validate(grader={**CHECK, "operation": "contains"})
    assert "grader.operation" in str(err.value)
    code = {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1.0\n"}
    with pytest.raises(openai.BadRequestError) as err:  # user code: off unless the operator allows
        client.fine_tuning.alpha.graders.run(grader=code, model_sample="x", item={})
    assert "python" in str(err.value).lower()
