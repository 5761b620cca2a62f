"""tunesmith.server.schemas: hyperparameters wherever the request put them; bounds."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tunesmith.server.schemas import JobCreate


def test_method_hyperparameters_win_over_the_legacy_form() -> None:
    body = JobCreate(
        model="m",
        training_file="f",
        hyperparameters={"n_epochs": 5},
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
    )
    assert body.hyper() == {"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": "auto"}
    legacy = JobCreate(model="m", training_file="f", hyperparameters={"batch_size": 4})
    assert legacy.hyper()["batch_size"] == 4 and legacy.hyper()["n_epochs"] == "auto"


@pytest.mark.parametrize(
    "bad",
    [
        {"hyperparameters": {"n_epochs": 0}},
        {"hyperparameters": {"learning_rate_multiplier": -1}},
        {"hyperparameters": {"batch_size": "big"}},
        {"suffix": "../x"},
        {"metadata": {"k" * 65: "v"}},
        {"seed": -1},
    ],
)
def test_out_of_bounds_requests_are_refused(bad) -> None:
    with pytest.raises(ValidationError):
        JobCreate(model="m", training_file="f", **bad)


def test_each_method_names_its_hyperparameters() -> None:
    dpo = JobCreate(
        model="m",
        training_file="f",
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.5, "n_epochs": 2}}},
    )
    assert dpo.hyper() == {
        "n_epochs": 2,
        "batch_size": "auto",
        "learning_rate_multiplier": "auto",
        "beta": 0.5,
    }
    rl = JobCreate(
        model="m",
        training_file="f",
        method={"type": "reinforcement", "reinforcement": {"grader": {"type": "string_check"}}},
    )
    assert rl.hyper() == {
        "n_epochs": "auto",
        "batch_size": "auto",
        "learning_rate_multiplier": "auto",
        "compute_multiplier": "auto",
        "eval_interval": "auto",
        "eval_samples": "auto",
        "reasoning_effort": "default",
    }


@pytest.mark.parametrize(
    "method",
    [
        {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}},
        {"type": "dpo", "dpo": {"hyperparameters": {"beta": 2.5}}},
        {"type": "dpo", "dpo": {"hyperparameters": {"gamma": 1}}},
        {"type": "reinforcement", "reinforcement": {}},  # the grader is required
        {
            "type": "reinforcement",
            "reinforcement": {"grader": {}, "hyperparameters": {"eval_interval": 0}},
        },
        {
            "type": "reinforcement",
            "reinforcement": {"grader": {}, "hyperparameters": {"eval_samples": 65}},
        },
        {
            "type": "reinforcement",
            "reinforcement": {"grader": {}, "hyperparameters": {"compute_multiplier": 0}},
        },
        {
            "type": "reinforcement",
            "reinforcement": {"grader": {}, "hyperparameters": {"reasoning_effort": "max"}},
        },
        {"type": "orpo"},
    ],
)
def test_out_of_bounds_methods_are_refused(method) -> None:
    with pytest.raises(ValidationError):
        JobCreate(model="m", training_file="f", method=method)
