"""Loading: device/dtype choice, stop tokens, adapters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunesmith.errors import ModelError
from tunesmith.models import load_model
from tunesmith.models.load import pick_device, pick_dtype


def test_cpu_defaults_to_float32_never_bf16() -> None:
    assert pick_dtype(torch.device("cpu")) == torch.float32
    assert pick_dtype(torch.device("cpu"), "bf16") == torch.bfloat16  # only when asked


def test_bad_dtype_and_device_are_user_errors() -> None:
    with pytest.raises(ModelError, match="unknown dtype"):
        pick_dtype(torch.device("cpu"), "float7")
    with pytest.raises(ModelError, match="unknown device"):
        pick_device("toaster")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_gpu_is_a_user_error() -> None:
    with pytest.raises(ModelError, match="no CUDA GPU"):
        pick_device("cuda")


def test_load_tiny_model(tiny_model_dir: Path) -> None:
    lm = load_model(tiny_model_dir)
    assert lm.device.type in ("cpu", "cuda")
    assert next(lm.model.parameters()).dtype == torch.float32 or lm.device.type == "cuda"
    im_end = lm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in lm.stop_token_ids
    assert not lm.model.training


def test_adapter_dir_attaches_lora(tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    peft_model = get_peft_model(
        base,
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    ids = torch.tensor([[1, 5, 9, 12, 40]])
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))(input_ids=ids).logits

    lm = load_model(adapter)
    with torch.no_grad():
        got = lm.model(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-3)  # the adapter really changes the output


# -- bad model files: one line naming the file and what is wrong, exit 2 ------------------------


def _copy_model(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _generate(model: Path, capsys) -> tuple[int, str]:
    from tunesmith.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["generate", str(model), "hi", "--max-new-tokens", "2"])
    out = capsys.readouterr()
    return (exc.value.code if isinstance(exc.value.code, int) else 0), out.out + out.err


def _truncate(model: Path) -> str:
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    return "model.safetensors is truncated"


def _pickle_only(model: Path) -> str:
    (model / "model.safetensors").unlink()
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04cos\nsystem\n")  # never unpickled
    return "only pickle weights (pytorch_model.bin)"


def _custom_type(model: Path) -> str:
    import json

    config = json.loads((model / "config.json").read_text())
    config.update(model_type="my-custom-llm", auto_map={"AutoModelForCausalLM": "x.Model"})
    (model / "config.json").write_text(json.dumps(config))
    return "config.json: model_type 'my-custom-llm'"


def _set_template(model: Path, template: str) -> None:
    import json

    for name in ("chat_template.jinja", "chat_template.json"):
        (model / name).unlink(missing_ok=True)
    cfg = json.loads((model / "tokenizer_config.json").read_text())
    cfg["chat_template"] = template
    (model / "tokenizer_config.json").write_text(json.dumps(cfg))


def _sandboxed_template(model: Path) -> str:
    _set_template(model, "{{ ''.__class__.__mro__[1].__subclasses__() }}")
    return "the template sandbox blocks"


def _broken_template(model: Path) -> str:
    _set_template(model, "{% for m in messages %}{{ m.content }")
    return "not valid Jinja"


@pytest.mark.parametrize(
    "damage", [_truncate, _pickle_only, _custom_type, _sandboxed_template, _broken_template]
)
def test_bad_model_files_exit_2_with_one_line(damage, tiny_model_dir, tmp_path, capsys) -> None:
    model = _copy_model(tiny_model_dir, tmp_path / "model")
    expect = damage(model)
    code, printed = _generate(model, capsys)
    assert code == 2, printed
    assert expect in printed and str(model) in printed
    assert "Traceback" not in printed
    assert "trust_remote_code" not in printed  # never suggested
    assert len(printed.strip().splitlines()) == 1


def test_an_empty_safetensors_file_is_named(tmp_path) -> None:
    from tunesmith.models.load import check_safetensors

    (tmp_path / "w.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match=r"w\.safetensors is not a complete safetensors file"):
        check_safetensors(tmp_path / "w.safetensors")
    (tmp_path / "w.safetensors").write_bytes((20).to_bytes(8, "little") + b"{not json at all}!!!")
    with pytest.raises(ModelError, match="damaged safetensors header"):
        check_safetensors(tmp_path / "w.safetensors")
