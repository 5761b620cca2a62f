"""The selective-LM-head loss equals the usual full-logits loss, with and without LoRA."""

from __future__ import annotations

import pytest
import torch

from tunesmith.train.objectives.sft import SFTLoss, count_trained


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    return m.eval()


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 600, (2, 24), generator=g)
    labels = ids.clone()
    labels[:, :10] = -100  # a prompt with no loss
    labels[1, 20:] = -100
    pos = torch.arange(24).repeat(2, 1)
    return ids, pos, labels


def test_matches_full_logits_cross_entropy(model):
    ids, pos, labels = _batch()
    with torch.no_grad():
        loss_sum, n, correct = SFTLoss(model)(ids, pos, labels).values()
        ref = model(input_ids=ids, position_ids=pos, labels=labels).loss
        logits = model(input_ids=ids, position_ids=pos).logits[:, :-1]
    assert int(n) == count_trained(labels) == 14 + 10
    assert (loss_sum / n).item() == pytest.approx(ref.item(), rel=1e-5)
    mask = labels[:, 1:] != -100
    want = (logits.argmax(-1)[mask] == labels[:, 1:][mask]).sum()
    assert int(correct) == int(want)


def test_packed_row_gives_each_example_its_own_loss(model):
    a = torch.randint(3, 600, (1, 12), generator=torch.Generator().manual_seed(1))
    b = torch.randint(3, 600, (1, 9), generator=torch.Generator().manual_seed(2))
    loss = SFTLoss(model)
    with torch.no_grad():
        la, na, _ = loss(a, torch.arange(12)[None], a).values()
        lb, nb, _ = loss(b, torch.arange(9)[None], b).values()
        # packed: b's first token has no label (it would be predicted from a's last token)
        packed = torch.cat([a, b], 1)
        labels = packed.clone()
        labels[0, 12] = -100
        pos = torch.cat([torch.arange(12), torch.arange(9)])[None]
        lp, n_p, _ = loss(packed, pos, labels).values()
    assert int(n_p) == int(na) + int(nb)
    assert lp.item() == pytest.approx((la + lb).item(), rel=1e-4)


def test_lora_adapters_are_applied_through_the_decoder(model):
    import copy

    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(
        copy.deepcopy(model), LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
    )
    ids, pos, labels = _batch(3)
    with torch.no_grad():
        ours, n, _ = SFTLoss(peft_model)(ids, pos, labels).values()
        ref = peft_model(input_ids=ids, position_ids=pos, labels=labels).loss
        base, _, _ = SFTLoss(model)(ids, pos, labels).values()
    assert (ours / n).item() == pytest.approx(ref.item(), rel=1e-5)
    assert abs(ours.item() - base.item()) > 1e-3  # the (non-zero) adapter changed the output
