"""GRPO on the tiny model: the loss is the clipped policy gradient, advantages are per group,
sampling is seeded and matches greedy generation, a bad grader or prompt file fails before
training with the field named, a failing grader is reward 0 (counted), and on a toy verifiable
task (JSON whose "answer" must equal a sum) the mean reward rises over the steps — and does
not when the advantages' sign is flipped, so the test can fail."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from train_helpers import base_spec

from tunesmith import api
from tunesmith.errors import ConfigError, DataError
from tunesmith.train.objectives import grpo
from tunesmith.train.objectives.grpo import (
    GRPOLoss,
    Rewards,
    check_grader,
    completion_row,
    group_advantages,
    token_logps,
)

SUM = {
    "type": "numeric",
    "name": "sum",
    "input": "{{sample.output_json.answer}}",
    "reference": "{{item.answer}}",
}
# Prompts whose sums are all 2: the tiny model (2 layers, hidden 64) cannot learn arithmetic
# in seconds, but it can learn to give the answer the grader rewards. The warm start below
# knows the JSON format and answers 1, 2 or 3 at random: GRPO must move it to 2.
PAIRS = [(1, 1), (0, 2), (2, 0)]


def write_prompts(path: Path, n: int = 24, text: str = "{a} + {b}", **extra) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            a, b = PAIRS[i % len(PAIRS)]
            content = text.format(a=a, b=b)
            row = {"messages": [{"role": "user", "content": content}], "answer": a + b}
            fh.write(json.dumps({**row, **extra}) + "\n")
    return path


@pytest.fixture(scope="module")
def warm_model(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model after a short SFT on the answer format, answers drawn at random."""
    root = tmp_path_factory.mktemp("grpo-warm")
    rng = random.Random(0)
    data = root / "format.jsonl"
    with open(data, "w", encoding="utf-8") as fh:
        for i in range(300):
            a, b = rng.choice(PAIRS)
            answer = json.dumps({"answer": rng.randint(1, 3)})
            msgs = [
                {"role": "user", "content": f"{a} + {b}"},
                {"role": "assistant", "content": answer},
            ]
            fh.write(json.dumps({"messages": msgs, "id": i}) + "\n")
    spec = base_spec(
        tiny_model_dir,
        data,
        root / "sft",
        adapter="none",
        batch_size=16,
        grad_accum=1,
        max_steps=40,
        learning_rate=1.5e-2,
        scheduler="constant",
        data={"max_seq_len": 64, "packing": False},
    )
    return api.train(spec).final_dir


def grpo_spec(model: Path, train: Path, out: Path, **extra):
    rl = {"grader": SUM, "samples_per_prompt": 8, "max_new_tokens": 10, "temperature": 0.7}
    rl.update(extra.pop("reinforcement", {}))
    spec = base_spec(
        model,
        train,
        out,
        method={"type": "reinforcement", "reinforcement": rl},
        lora={"r": 8, "alpha": 16, "dropout": 0.0},
        batch_size=4,
        grad_accum=1,
        learning_rate=5e-3,
        scheduler="constant",
        max_steps=16,
        data={"max_seq_len": 64},
    )
    spec.update(extra)
    return spec


def rewards_of(result) -> list[float]:
    return [m["reward"] for m in result.metrics if "reward" in m]


# -- learning ----------------------------------------------------------------------------------


def test_grpo_raises_the_mean_reward_on_a_toy_sum_task(warm_model, tmp_path):
    train = write_prompts(tmp_path / "train.jsonl")
    val = write_prompts(tmp_path / "val.jsonl", n=6, text="{a} + {b} =")
    spec = grpo_spec(warm_model, train, tmp_path / "run", eval={"every_steps": 8})
    spec["data"]["validation"] = str(val)
    seen = []
    result = api.train(spec, on_event=seen.append)
    rewards = rewards_of(result)
    assert len(rewards) == 16
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last >= first + 0.25, rewards
    record = result.metrics[-1]
    for key in (
        "reward_std",
        "completion_length",
        "frac_zero_std",
        "clip_fraction",
        "grader_errors",
    ):
        assert key in record
    assert record["grader_errors"] == 0 and record["clip_fraction"] == 0.0  # one pass: ratio 1
    assert record["val_loss"] == -record["val_reward"] and record["val_prompts"] == 6
    assert any(e.kind == "metrics" and "reward" in e.data for e in seen)
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["reward"] == rewards[-1]
    # compare for RL runs: the run's grader on its held-out prompts, base vs tuned
    comparison = api.compare(result.run_dir)
    main = comparison.main
    assert comparison.main_metric == "sum" and main.n == 6 and main.base is not None
    assert main.details["grader_errors"] == {"tuned": 0, "base": 0}
    assert [e.tuned_scores["sum"] for e in comparison.examples] == [
        float(e.tuned_output == '{"answer": 2}') for e in comparison.examples
    ]
    assert (result.run_dir / "eval" / "results.json").is_file()


def test_with_the_advantage_sign_flipped_the_reward_does_not_rise(
    warm_model, tmp_path, monkeypatch
):
    """The same run, learning away from the reward: what the test above would see if the
    policy gradient were wrong."""
    real = grpo.group_advantages
    monkeypatch.setattr(
        grpo, "group_advantages", lambda r, k, scale: (-real(r, k, scale=scale)[0], 0)
    )
    train = write_prompts(tmp_path / "train.jsonl")
    rewards = rewards_of(api.train(grpo_spec(warm_model, train, tmp_path / "run", max_steps=12)))
    assert sum(rewards[-4:]) / 4 < sum(rewards[:4]) / 4 + 0.1, rewards


# -- the pieces --------------------------------------------------------------------------------


def test_advantages_are_per_group_and_zero_when_a_group_scored_alike():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5])
    adv, flat = group_advantages(r, 4, scale=False)
    assert flat == 1
    assert torch.allclose(adv[:4], torch.tensor([0.75, -0.25, -0.25, -0.25]))
    assert torch.equal(adv[4:], torch.zeros(4))
    scaled, _ = group_advantages(r, 4, scale=True)
    std = torch.tensor([1.0, 0.0, 0.0, 0.0]).std()
    assert torch.allclose(scaled[:4], adv[:4] / (std + 1e-4))


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()


def _batch(model, advantages, kl_beta=0.0):
    g = torch.Generator().manual_seed(0)
    rows = [
        completion_row(torch.randint(3, 600, (5,), generator=g).tolist(),
                       torch.randint(3, 600, (n,), generator=g).tolist())
        for n in (3, 6)
    ]  # fmt: skip
    from tunesmith.train.batching import collate

    batch = collate(rows, 0, "cpu")
    batch["advantages"] = torch.tensor(advantages)
    batch["ref_logps"] = torch.zeros(9)
    batch["stats"] = torch.zeros(0, dtype=torch.float64)
    batch["n_completions"] = torch.tensor(2)
    return batch


def test_the_loss_is_the_policy_gradient_averaged_per_completion(model):
    params = [p for p in model.parameters()]
    loss_fn = GRPOLoss(model, clip_epsilon=0.2, kl_beta=0.0, keys=[])
    batch = _batch(model, [1.5, -0.5])
    out = loss_fn(**batch)
    assert out["count"].item() == 2 and out["clipped_tokens"].item() == 0
    grads = torch.autograd.grad(out["loss"], params[:3], allow_unused=True)
    # the obvious way: -(A1 mean logp(completion 1) + A2 mean logp(completion 2))
    logp, seq = token_logps(model, batch["input_ids"], batch["position_ids"], batch["labels"])
    want = -(1.5 * logp[seq == 0].mean() + -0.5 * logp[seq == 1].mean())
    expected = torch.autograd.grad(want, params[:3], allow_unused=True)
    for a, b in zip(grads, expected, strict=True):
        assert a is not None and torch.allclose(a, b, atol=1e-6)
    assert out["loss"].item() == pytest.approx(-(1.5 - 0.5), abs=1e-5)


def test_the_ratio_is_clipped_against_the_rollout_log_probs(model):
    loss_fn = GRPOLoss(model, clip_epsilon=0.2, kl_beta=0.0, keys=[])
    batch = _batch(model, [1.0, 1.0])
    with torch.no_grad():
        logp, _ = token_logps(model, batch["input_ids"], batch["position_ids"], batch["labels"])
    # the policy made every token 2x likelier than at rollout time: ratio 2, clipped at 1.2
    out = loss_fn(**batch, old_logps=logp - torch.log(torch.tensor(2.0)))
    assert out["clipped_tokens"].item() == 9
    assert out["loss"].item() == pytest.approx(-2 * 1.2, rel=1e-5)


def test_the_kl_term_is_k3_to_the_reference(model):
    loss_fn = GRPOLoss(model, clip_epsilon=0.2, kl_beta=0.5, keys=[])
    batch = _batch(model, [0.0, 0.0])
    with torch.no_grad():
        logp, _ = token_logps(model, batch["input_ids"], batch["position_ids"], batch["labels"])
    batch["ref_logps"] = logp + 0.3
    out = loss_fn(**batch)
    k3 = torch.exp(torch.tensor(0.3)) - 0.3 - 1
    assert out["kl_tokens"].item() == pytest.approx(9 * k3.item(), rel=1e-4)
    assert out["loss"].item() == pytest.approx(2 * 0.5 * k3.item(), rel=1e-4)


def test_sampling_is_seeded_and_greedy_sampling_is_greedy_generation(model, tiny_tokenizer):
    from tunesmith.inference import prompt_ids
    from tunesmith.train.objectives.rollout import sample, sampling_mode

    stop = [tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")]
    prompts = [
        prompt_ids(tiny_tokenizer, [{"role": "user", "content": "the customer"}]),
        prompt_ids(tiny_tokenizer, [{"role": "system", "content": "Be brief please."},
                                    {"role": "user", "content": "refund my order"}]),
    ]  # fmt: skip
    kw = {"max_new_tokens": 12, "top_p": 0.9, "stop_ids": stop, "pad_id": stop[0]}
    with sampling_mode(model):
        greedy = sample(model, prompts, temperature=0.0, **kw)
        for p, got in zip(prompts, greedy, strict=True):
            ids = torch.tensor([p])
            ref = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=12,
                eos_token_id=stop,
                pad_token_id=stop[0],
            )
            assert got == ref[0, len(p):].tolist()[: len(got)]  # fmt: skip
        runs = [
            sample(model, prompts * 3, temperature=1.0, generator=torch.Generator().manual_seed(s),
                   **kw)
            for s in (1, 1, 2)
        ]  # fmt: skip
    assert runs[0] == runs[1] and runs[0] != runs[2]
    capped = sample(model, prompts, temperature=1.0, **{**kw, "max_new_tokens": [2, 5]})
    assert len(capped[0]) <= 2 and len(capped[1]) <= 5


def test_a_grader_that_fails_on_a_sample_gives_reward_zero_and_is_counted():
    from tunesmith.config import ReinforcementOptions

    rewards = Rewards(ReinforcementOptions(grader=SUM))
    texts = ['{"answer": 2}', '{"answer": 3}', "not json", '{"answer": 2}']
    items = [{"answer": 2}, {"answer": 2}, {"answer": 2}, {"other": 1}]  # the last lacks it
    got, _, errors = rewards.score(texts, [[]] * 4, items)
    assert got == [1.0, 0.0, 0.0, 0.0]
    assert errors == 1  # the model's unparsable answer is its fault, not the grader's


def test_a_multi_grader_reports_each_sub_reward():
    from tunesmith.config import ReinforcementOptions

    multi = {
        "type": "multi",
        "name": "shaped",
        "graders": {
            "fmt": {
                "type": "json_schema",
                "name": "fmt",
                "schema": {"type": "object", "required": ["answer"]},
            },
            "sum": SUM,
        },
        "calculate_output": "0.25 * fmt + 0.75 * sum",
    }
    rewards = Rewards(ReinforcementOptions(grader=multi))
    got, subs, _ = rewards.score(['{"answer": 2}', '{"answer": 5}'], [[]] * 2, [{"answer": 2}] * 2)
    assert got == [1.0, 0.25] and subs == {"fmt": [1.0, 1.0], "sum": [1.0, 0.0]}


# -- refused before training -------------------------------------------------------------------


def test_a_bad_grader_fails_before_training_naming_the_field(tmp_path, tiny_model_dir):
    from tunesmith.config import ReinforcementOptions

    bad = {**SUM, "tolerance": -1}
    with pytest.raises(ConfigError) as info:
        check_grader(ReinforcementOptions(grader=bad))
    assert info.value.param == "method.reinforcement.grader.tolerance"
    train = write_prompts(tmp_path / "train.jsonl")
    spec = grpo_spec(tiny_model_dir, train, tmp_path / "run", reinforcement={"grader": bad})
    with pytest.raises(ConfigError, match=r"grader\.tolerance"):
        api.train(spec)
    assert not (tmp_path / "run").exists()  # nothing was written, no model loaded
    # a template reading a field the rows do not have: found against the first row
    missing = {**SUM, "reference": "{{item.expected}}"}
    spec = grpo_spec(tiny_model_dir, train, tmp_path / "run2", reinforcement={"grader": missing})
    with pytest.raises(ConfigError, match="expected"):
        api.train(spec)


def test_no_grader_and_python_graders_without_opt_in_are_refused():
    from tunesmith.config import ReinforcementOptions

    with pytest.raises(ConfigError, match="needs a grader"):
        check_grader(ReinforcementOptions(grader={}))
    code = {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1.0\n"}
    with pytest.raises(ConfigError, match="not allowed") as info:
        check_grader(ReinforcementOptions(grader=code))
    assert "allow_python" in (info.value.hint or "")
    check_grader(ReinforcementOptions(grader=code, allow_python=True))  # opted in: fine


def test_a_prompt_file_with_answers_fails_naming_the_line_and_field(tmp_path, tiny_model_dir):
    train = write_prompts(tmp_path / "train.jsonl")
    with open(train, "a", encoding="utf-8") as fh:
        msgs = [{"role": "user", "content": "1 + 1"}, {"role": "assistant", "content": "2"}]
        fh.write(json.dumps({"messages": msgs, "answer": 2}) + "\n")
        fh.write(json.dumps({"messages": [], "answer": 2}) + "\n")
    with pytest.raises(DataError) as info:
        api.train(grpo_spec(tiny_model_dir, train, tmp_path / "run"))
    assert info.value.where == f"{train}:25" and "messages[1].role" in info.value.message
    assert "must end with a user message" in info.value.message
    report = api.validate_data(train, model=tiny_model_dir, method="reinforcement")
    assert [(e.line, e.field) for e in report.errors] == [
        (25, "messages[1].role"),
        (26, "messages"),
    ]


def test_compare_runs_a_python_grader_from_a_run_config_only_when_trusted(tmp_path, tiny_model_dir):
    import yaml

    run = tmp_path / "someone-elses-run"
    run.mkdir()
    code = {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1.0\n"}
    config = {
        "model": str(tiny_model_dir),
        "method": {
            "type": "reinforcement",
            "reinforcement": {"grader": code, "allow_python": True},
        },
        "data": {"validation": str(write_prompts(tmp_path / "val.jsonl", n=3))},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (run / "manifest.json").write_text(json.dumps({"method": "reinforcement"}), encoding="utf-8")
    with pytest.raises(ConfigError, match="python grader") as info:
        api.compare(run)
    assert "--trust-run-config" in (info.value.hint or "")


def test_kl_to_the_reference_starts_at_zero_and_grows(warm_model, tmp_path):
    train = write_prompts(tmp_path / "train.jsonl")
    spec = grpo_spec(warm_model, train, tmp_path / "run", max_steps=4,
                     reinforcement={"kl_beta": 0.1})  # fmt: skip
    kls = [m["kl"] for m in api.train(spec).metrics]
    assert kls[0] == pytest.approx(0.0, abs=1e-6)  # the new adapter is zero: policy == reference
    assert all(k >= 0 for k in kls) and kls[-1] > 1e-6


def test_a_resumed_run_samples_and_learns_like_an_uninterrupted_one(warm_model, tmp_path):
    train = write_prompts(tmp_path / "train.jsonl")
    straight = rewards_of(api.train(grpo_spec(warm_model, train, tmp_path / "a", max_steps=4)))
    out = tmp_path / "b"

    def cancel_after_two(event) -> None:
        if event.kind == "metrics" and event.step == 2:
            api.cancel(out)

    first = api.train(grpo_spec(warm_model, train, out, max_steps=4), on_event=cancel_after_two)
    assert first.status == "cancelled"
    resumed = api.resume(out)
    assert resumed.status == "completed"
    assert rewards_of(resumed) == straight


def test_fsdp_is_refused_before_anything_loads(tmp_path, tiny_model_dir):
    train = write_prompts(tmp_path / "train.jsonl")
    spec = grpo_spec(tiny_model_dir, train, tmp_path / "run", distributed={"strategy": "fsdp"})
    with pytest.raises(ConfigError, match="FSDP") as info:
        api.train(spec)
    assert info.value.param == "distributed.strategy"
