"""DPO on the tiny model: it learns the preference, holds one copy of the base, caches its
reference, resumes exactly, trains on top of an SFT adapter without touching it, and refuses
bad configs and chat files early."""

from __future__ import annotations

import gc
import hashlib
import json
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from train_helpers import base_spec, write_chat, write_pairs

from tunesmith import api
from tunesmith.errors import ConfigError, DataError
from tunesmith.train.batching import Row
from tunesmith.train.objectives.dpo import DPOLoss
from tunesmith.train.objectives.preference import (
    PairRow,
    blank_pair,
    collate_pairs,
    completion_logps,
)


def dpo_spec(model_dir: Path, train: Path, out: Path, **extra):
    dpo = extra.pop("dpo", {})
    spec = base_spec(
        model_dir,
        train,
        out,
        method={"type": "dpo", "dpo": dpo},
        learning_rate=1e-2,
        batch_size=4,
        grad_accum=1,
    )
    spec.update(extra)
    return spec


def cache_messages(events: list) -> list:
    return [e for e in events if e.kind == "message" and e.phase == "reference"]


# -- the loss itself --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()


def _pair(seed: int, prompt: int = 6, a: int = 5, b: int = 3) -> PairRow:
    g = torch.Generator().manual_seed(seed)
    head = torch.randint(3, 600, (prompt,), generator=g).tolist()

    def row(n: int) -> Row:
        tail = torch.randint(3, 600, (n,), generator=g).tolist()
        ids = head + tail
        return Row(ids, [-100] * prompt + tail, list(range(len(ids))))

    return PairRow(row(a), row(b), ref_chosen=-30.0 - seed, ref_rejected=-20.0 + seed)


def _full_logps(model, row: Row) -> float:
    """Summed log-prob of the trained tokens from the full logits (the slow, obvious way)."""
    ids = torch.tensor([row.input_ids])
    logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    return sum(logp[i, t].item() for i, t in enumerate(row.labels[1:]) if t != -100)


def test_completion_logps_match_the_full_logits(model):
    rows = [_pair(0), _pair(1, a=2, b=7)]
    batch = collate_pairs(rows, 0, "cpu")
    with torch.no_grad():
        logps, n = completion_logps(
            model, batch["input_ids"], batch["position_ids"], batch["labels"]
        )
    want = [_full_logps(model, r.chosen) for r in rows] + [
        _full_logps(model, r.rejected) for r in rows
    ]
    assert logps.tolist() == pytest.approx(want, rel=1e-5)
    assert n.tolist() == [5, 2, 3, 7]


@pytest.mark.parametrize("loss", ["sigmoid", "ipo"])
def test_the_loss_is_the_formula_and_blank_pairs_add_nothing(model, loss):
    beta, eps = 0.3, 0.1
    rows = [_pair(0), _pair(1, a=2, b=7)]
    module = DPOLoss(model, beta=beta, label_smoothing=eps, loss=loss)
    with torch.no_grad():
        out = module(**collate_pairs(rows, 0, "cpu"))
        padded = module(**collate_pairs([*rows, blank_pair(rows[0])], 0, "cpu"))
    want_loss, want_margin, correct = 0.0, 0.0, 0
    for r in rows:
        pc, pr = _full_logps(model, r.chosen), _full_logps(model, r.rejected)
        rc, rr = r.ref_chosen, r.ref_rejected
        if loss == "ipo":
            h = (pc - rc) / r.chosen.n_trained - (pr - rr) / r.rejected.n_trained
            want_loss += (h - 1 / (2 * beta)) ** 2
        else:
            z = torch.tensor(beta * ((pc - rc) - (pr - rr)))
            want_loss += float(-(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z))
        want_margin += beta * (pc - rc) - beta * (pr - rr)
        correct += beta * (pc - rc) > beta * (pr - rr)
    assert out["loss"].item() == pytest.approx(want_loss, rel=1e-4)
    assert out["margin"].item() == pytest.approx(want_margin, rel=1e-4)
    assert int(out["count"]) == 2 and int(out["correct"]) == correct
    for key, value in out.items():  # a blank pair (a rank short of rows) changes nothing
        assert padded[key].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-6), key


def test_bad_dpo_config_values_are_config_errors_naming_the_key():
    from tunesmith.config import load_spec

    cases = {
        "method.dpo.beta": {"beta": 0},
        "method.dpo.label_smoothing": {"label_smoothing": 0.5},
        "method.dpo.loss": {"loss": "hinge"},
    }
    for key, dpo in cases.items():
        with pytest.raises(ConfigError) as info:
            load_spec({"method": {"type": "dpo", "dpo": dpo}})
        assert info.value.param == key and key in info.value.message
    with pytest.raises(ConfigError) as info:
        load_spec({"method": {"type": "dpo", "dpo": {"bta": 0.2}}})
    assert "did you mean 'method.dpo.beta'" in (info.value.hint or "")
    with pytest.raises(ConfigError, match=r"method\.dpo\.beta"):
        load_spec({"method": "dpo"}, ["method.dpo.beta=-1"])
    assert load_spec({"method": {"type": "dpo", "dpo": {"beta": "auto"}}}).method.dpo.beta == 0.1
    assert load_spec({"method": "dpo"}, ["method.dpo.beta=0.5"]).method.dpo.beta == 0.5
    assert load_spec({}, ["method.dpo.loss=ipo"]).method.dpo.loss == "ipo"


def test_a_chat_file_given_to_dpo_fails_naming_it_before_the_model_loads(
    tiny_model_dir, tmp_path, monkeypatch
):
    from tunesmith.models import load

    def no_model(*a, **k):
        raise AssertionError("the model was loaded for a file DPO cannot use")

    monkeypatch.setattr(load, "load_model", no_model)
    chat = write_chat(tmp_path / "chat.jsonl", 16)
    with pytest.raises(DataError) as info:
        api.train(dpo_spec(tiny_model_dir, chat, tmp_path / "run"))
    assert info.value.where == str(chat)
    assert "method 'dpo' trains on preference pairs" in info.value.message
    assert not (tmp_path / "run").exists()


# -- training on the tiny model ---------------------------------------------------------------


@pytest.fixture(scope="module")
def dpo_run(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dpo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNESMITH_HOME", str(tmp / "home"))
        train = write_pairs(tmp / "train.jsonl", 64)
        val = write_pairs(tmp / "val.jsonl", 24, seed=1)
        spec = dpo_spec(
            tiny_model_dir,
            train,
            tmp / "run",
            max_steps=24,
            data={"train": str(train), "validation": str(val), "max_seq_len": 128},
            eval={"every_steps": 12, "compare_base": False},
        )
        events: list = []
        result = api.train(spec, on_event=events.append)
        yield SimpleNamespace(tmp=tmp, result=result, events=events, val=val, home=tmp / "home")


def test_dpo_raises_heldout_preference_accuracy_and_margin(dpo_run, tiny_model_dir):
    from tunesmith.eval.preference import compare_margins, log_prob_margins, read_pairs
    from tunesmith.models.load import load_model

    pairs = read_pairs(dpo_run.val)
    base = load_model(tiny_model_dir)
    tuned = SimpleNamespace(model=dpo_run.result.model.eval(), tokenizer=base.tokenizer)
    found = compare_margins(log_prob_margins(base, pairs), log_prob_margins(tuned, pairs), beta=0.1)
    acc, margin = found["preference_accuracy"], found["reward_margin"]
    assert acc.tuned >= 0.9 and acc.tuned > acc.base + 0.3 and acc.significant
    assert margin.diff > 0.5 and margin.ci[0] > 0
    losses = dpo_run.result.losses
    assert losses[0] == pytest.approx(math.log(2), abs=1e-3)  # policy == reference at step 0
    assert sum(losses[-4:]) / 4 < 0.45


def test_rewards_and_accuracy_go_to_metrics_and_events(dpo_run):
    run = dpo_run.result.run
    rows = run.read_metrics()
    assert len(rows) == 24
    for key in ("rewards_chosen", "rewards_rejected", "reward_margin", "preference_accuracy"):
        assert all(key in r for r in rows), key
    evals = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in evals] == [12, 24]
    last = evals[-1]
    assert last["val_preference_accuracy"] >= 0.9 and last["val_reward_margin"] > 0.5
    assert last["val_pairs"] == 24
    assert last["reward_margin"] == pytest.approx(
        last["rewards_chosen"] - last["rewards_rejected"], abs=1e-6
    )
    logged = [json.loads(x) for x in run.events.read_text().splitlines()]
    metrics = [e for e in logged if e["kind"] == "metrics"]
    assert "val_preference_accuracy" in metrics[-1]["data"]
    started = next(e for e in logged if e["kind"] == "status")
    assert started["data"]["unit"] == "pairs"
    assert any(e["kind"] == "message" and e["phase"] == "reference" for e in logged)
    assert json.loads(run.manifest_path.read_text())["method"] == "dpo"


def test_compare_reports_preference_accuracy_base_vs_tuned(dpo_run):
    result = api.compare(dpo_run.result.run_dir, reference=False, max_new_tokens=8)
    acc = result.metrics["preference_accuracy"]
    margin = result.metrics["reward_margin"]
    assert result.main_metric == "preference_accuracy" and result.improved
    assert acc.base is not None and acc.tuned > acc.base and acc.ci[0] > 0 and acc.n == 24
    assert margin.diff > 0 and margin.ci[0] > 0
    saved = json.loads((dpo_run.result.run_dir / "eval" / "results.json").read_text())
    assert saved["main_metric"] == "preference_accuracy"
    assert "reward_margin" in saved["metrics"]


def test_the_reference_cache_is_hit_on_a_rerun_and_a_beta_sweep(dpo_run, tiny_model_dir):
    first = cache_messages(dpo_run.events)
    assert [m.data["cache_hit"] for m in first] == [False]
    files = list((dpo_run.home / "cache" / "dpo-reference").glob("*.safetensors"))
    assert len(files) == 1 and first[0].data["cache"] == str(files[0])
    tmp = dpo_run.tmp
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNESMITH_HOME", str(dpo_run.home))
        spec = json.loads(json.dumps(dpo_spec(tiny_model_dir, tmp / "train.jsonl", tmp / "x")))
        spec["data"] = {
            "train": str(tmp / "train.jsonl"),
            "validation": str(dpo_run.val),
            "max_seq_len": 128,
        }
        seen = {}
        for name, change in (
            ("beta", {"method": {"type": "dpo", "dpo": {"beta": 0.5}}}),
            ("ipo", {"method": {"type": "dpo", "dpo": {"loss": "ipo"}}}),
            ("length", {"data": {**spec["data"], "max_seq_len": 96}}),
        ):
            events: list = []
            api.train(
                {**spec, **change, "max_steps": 1, "output_dir": str(tmp / name)},
                on_event=events.append,
            )
            seen[name] = [m.data["cache_hit"] for m in cache_messages(events)]
    assert seen == {"beta": [True], "ipo": [True], "length": [False]}
    assert len(list(files[0].parent.glob("*.safetensors"))) == 2


def test_the_lora_reference_holds_one_copy_of_the_base(tiny_model_dir, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from tunesmith.train.objectives import reference

    loads, big_copies, used = [], [], []
    original = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(
        AutoModelForCausalLM,
        "from_pretrained",
        lambda *a, **k: (loads.append(a), original(*a, **k))[1],
    )

    def no_module_copy(self, memo):
        raise AssertionError(f"a {type(self).__name__} was deep-copied")

    monkeypatch.setattr(torch.nn.Module, "__deepcopy__", no_module_copy, raising=False)
    tensor_copy = torch.Tensor.__deepcopy__

    def counted(self, memo):
        if self.numel() >= 4096:
            big_copies.append(tuple(self.shape))
        return tensor_copy(self, memo)

    monkeypatch.setattr(torch.Tensor, "__deepcopy__", counted)
    logps = reference._logps

    def recording(model, *args):
        used.append(model.get_input_embeddings().weight.data_ptr())
        return logps(model, *args)

    monkeypatch.setattr(reference, "_logps", recording)

    def embedding_storages() -> set[int]:
        gc.collect()
        shape = (vocab, hidden)
        with warnings.catch_warnings():  # isinstance() wakes deprecated torch attributes
            warnings.simplefilter("ignore")
            tensors = [t for t in gc.get_objects() if isinstance(t, torch.Tensor)]
        return {t.untyped_storage().data_ptr() for t in tensors if tuple(t.shape) == shape}

    config = json.loads((tiny_model_dir / "config.json").read_text())
    vocab, hidden = config["vocab_size"], config["hidden_size"]
    before = embedding_storages()
    train = write_pairs(tmp_path / "train.jsonl", 16)
    result = api.train(dpo_spec(tiny_model_dir, train, tmp_path / "run", max_steps=2))
    assert len(loads) == 1  # the base was loaded once ...
    assert big_copies == []  # ... and no weight was copied
    embedding = result.model.get_input_embeddings().weight
    assert set(used) == {embedding.data_ptr()}  # the reference ran on the policy's own weights
    assert len(embedding_storages() - before) == 1  # one live copy of the base's embedding
    assert not embedding.requires_grad


def test_resume_continues_exactly_like_an_uninterrupted_run(tiny_model_dir, tmp_path):
    from tunesmith.runs import RunDir

    train = write_pairs(tmp_path / "train.jsonl", 32)

    def spec(name: str) -> dict:  # no cache: the resumed run recomputes the reference
        return dpo_spec(
            tiny_model_dir,
            train,
            tmp_path / name,
            max_steps=6,
            save_every_steps=2,
            lora={"dropout": 0.1},
            dpo={"cache_reference": False},
        )

    whole = api.train(spec("whole")).losses

    def cancel_at_3(event) -> None:
        if event.kind == "metrics" and event.step == 3:
            RunDir(tmp_path / "cut").request_cancel()

    cut = api.train(spec("cut"), on_event=cancel_at_3)
    assert cut.status == "cancelled" and len(cut.losses) == 4
    resumed = api.resume(tmp_path / "cut")
    assert resumed.status == "completed"
    assert resumed.losses == whole  # bit for bit, steps 1-6


def test_dpo_after_sft_keeps_the_sft_adapter_bit_identical(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    from tunesmith.models.load import load_model

    sft = api.train(
        base_spec(tiny_model_dir, write_chat(tmp_path / "chat.jsonl", 24), tmp_path / "sft",
                  max_steps=4)
    )  # fmt: skip
    weights = sft.final_dir / "adapter_model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    sft_tensors = load_file(str(weights))
    train = write_pairs(tmp_path / "train.jsonl", 24)
    events: list = []
    dpo = api.train(
        dpo_spec(sft.run_dir, train, tmp_path / "dpo", max_steps=4, lora={"r": 4, "alpha": 8}),
        on_event=events.append,
    )
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == digest  # the files: untouched
    assert any("on top of the adapter" in e.message for e in events)
    # the policy holds no SFT adapter parameters: only the new one trains
    trainable = {n for n, p in dpo.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    final = dpo.final_dir
    note = json.loads((final / "stack.json").read_text())
    assert note["base_adapter"]["sha256"] == digest
    assert (final / "new_adapter" / "adapter_model.safetensors").is_file()
    combined = load_file(str(final / "adapter_model.safetensors"))
    assert json.loads((final / "adapter_config.json").read_text())["r"] == 16 + 4
    for key, tensor in sft_tensors.items():  # the SFT ranks, bit for bit
        part = combined[key][: tensor.shape[0]] if "lora_A" in key else combined[key][:, :16]
        assert torch.equal(part, tensor), key
    new = load_file(str(final / "new_adapter" / "adapter_model.safetensors"))
    assert any(t.abs().sum() > 0 for k, t in new.items() if "lora_B" in k)  # it trained
    # final/ loads as one plain adapter on the base and computes the trained model
    loaded = load_model(dpo.run_dir)
    ids = torch.tensor([[1, 5, 9, 13, 40, 50, 7]])
    with torch.no_grad():
        want = dpo.model.eval()(input_ids=ids).logits
        got = loaded.model(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert json.loads(dpo.run.manifest_path.read_text())["base_adapter"]["sha256"] == digest
