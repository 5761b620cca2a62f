"""Rows with different LoRA adapters in one forward pass, in three operations per layer.

peft's mixed-adapter inference (`adapter_names=[…]`) is the reference: per LoRA layer it runs
the base layer, then for every adapter in the batch gathers that adapter's rows, runs
`lora_B(lora_A(x))`, scales and scatters the result back — about six operations per adapter
per layer, plus hooks registered and removed on every layer at every forward pass. On the
default model (210 LoRA layers) that costs more than the base model itself on a CPU: measured
on this 2-core box, a step of 8 rows over 4 adapters took 1.7x a plain step, and one row with
its adapter 1.6x one row without.

Here each layer computes, for the adapters present in the batch,

    y = base(x) + ((x A^T) * M) B^T          A = [A_1; …; A_k],  B = [s_1 B_1, …, s_k B_k]

where M masks each row to its own adapter's block of ranks (rows of the base model: all
zero). The concatenated weights are built once per set of adapters and kept for the next
steps (a set that still covers the batch is reused as rows leave); one adapter alone needs no
copy and no mask (`addmm` with alpha = its scaling). The weights are peft's own `lora_A` /
`lora_B`: loading, deleting and saving stay peft's, and a test checks the logits against
peft's mixed batches. peft's own LoRA computation is switched off on the covered layers
(`enable_adapters(False)`) and the sum above is added by a forward hook.

Covered: plain LoRA on `nn.Linear` layers. Anything else (DoRA and other variants, LoRA on
embeddings, `lora_bias`, modules_to_save, trainable tokens) leaves peft's mixed path in charge.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

BASE = "__base__"  # the rows without an adapter (peft's name for them in a mixed batch)
KEEP_LAYOUTS = 2  # concatenated weight sets kept (each holds a copy of its adapters' weights)


@dataclass
class _Layout:
    """Per layer: (A [R, in], B [out, R], alpha, group) for the adapters `names`, in order;
    `blocks[group]` gives each adapter's column range in that layer's ranks."""

    names: tuple[str, ...]
    entries: dict[Any, tuple[Any, Any, float, tuple[tuple[str, int], ...]]] = field(
        default_factory=dict
    )
    ranks: int = 0


def covered(model: Any) -> bool:
    """Whether every adapter layer of a peft model is plain LoRA on an nn.Linear."""
    from peft.tuners.lora.layer import Linear as LoraLinear
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper
    from torch import nn

    for module in model.modules():
        if isinstance(module, AuxiliaryTrainingWrapper):
            return False
        if not isinstance(module, BaseTunerLayer):
            continue
        if type(module) is not LoraLinear or not isinstance(module.get_base_layer(), nn.Linear):
            return False
        if module.lora_variant or any(module.lora_bias.values()) or module.fan_in_fan_out:
            return False
    return True


def _compute_dtype(layer: Any, adapter: str) -> Any:
    """The dtype the layer computes in: its base weight's, or for a base without a float
    weight (int8 serving layers, packed.py) its adapter's own."""
    weight = getattr(layer.get_base_layer(), "weight", None)
    if weight is not None and weight.dtype.is_floating_point:
        return weight.dtype
    return layer.lora_A[adapter].weight.dtype


class MultiLora:
    """The fused mixed-adapter path of one peft model (see the module docstring)."""

    def __init__(self, model: Any):
        self.model = model
        self.active = False
        self._layers: list[Any] = []
        self._hooked: set[int] = set()
        self._layouts: OrderedDict[tuple[str, ...], _Layout] = OrderedDict()
        self._single: dict[str, _Layout] = {}  # views of one adapter's weights: cheap to keep
        self._plan: tuple[_Layout, dict[Any, Any]] | None = None
        self.refresh()

    def refresh(self) -> None:
        """Adapters were loaded or deleted (call under the model lock): rescan the layers."""
        from peft.tuners.lora.layer import LoraLayer

        self._layouts.clear()
        self._single.clear()
        self._plan = None
        self._layers = [m for m in self.model.modules() if isinstance(m, LoraLayer)]
        self.use(covered(self.model))

    def use(self, active: bool) -> None:
        """Switch between this path (True) and peft's own LoRA computation (False)."""
        self.active = active
        self._plan = None
        for layer in self._layers:
            layer.enable_adapters(not active)
            if active and id(layer) not in self._hooked:
                layer.register_forward_hook(self._hook)
                self._hooked.add(id(layer))

    def prepare(self, names: list[str]) -> None:
        """Set up the next forward pass for rows using adapters `names` (`__base__`: none)."""
        import torch

        wanted = tuple(sorted({n for n in names if n != BASE}))
        if not wanted:
            self._plan = None
            return
        layout = self._layout(wanted)
        masks: dict[Any, Any] = {}
        device = next(self.model.parameters()).device
        for _, _, _, group in layout.entries.values():
            if group in masks:
                continue
            if len(group) == 1 and all(n == group[0][0] for n in names):
                masks[group] = None  # every row uses this layer's only adapter: no mask
                continue
            rows = []
            for n in names:
                rows.append([1.0 if a == n else 0.0 for a, r in group for _ in range(r)])
            dtype = next(iter(layout.entries.values()))[0].dtype
            masks[group] = torch.tensor(rows, dtype=dtype, device=device)[:, None, :]
        self._plan = (layout, masks)

    def _layout(self, wanted: tuple[str, ...]) -> _Layout:
        if len(wanted) == 1:
            if wanted[0] not in self._single:
                self._single[wanted[0]] = self._build(wanted)
            return self._single[wanted[0]]
        fits = [
            lay
            for lay in self._layouts.values()
            if set(wanted) <= set(lay.names) and len(lay.names) <= 2 * len(wanted)
        ]
        if fits:
            best = min(fits, key=lambda lay: lay.ranks)
            self._layouts.move_to_end(best.names)
            return best
        layout = self._layouts[wanted] = self._build(wanted)
        while len(self._layouts) > KEEP_LAYOUTS:
            self._layouts.popitem(last=False)
        return layout

    def _build(self, wanted: tuple[str, ...]) -> _Layout:
        import torch

        layout = _Layout(wanted)
        for layer in self._layers:
            here = [a for a in wanted if a in layer.lora_A]
            if not here:
                continue
            group = tuple((a, int(layer.lora_A[a].weight.shape[0])) for a in here)
            dtype = _compute_dtype(layer, here[0])
            if len(here) == 1:
                a = here[0]
                entry = (
                    layer.lora_A[a].weight.to(dtype),
                    layer.lora_B[a].weight.to(dtype),
                    float(layer.scaling[a]),
                    group,
                )
            else:
                big_a = torch.cat([layer.lora_A[a].weight for a in here]).to(dtype)
                big_b = torch.cat(
                    [layer.lora_B[a].weight * layer.scaling[a] for a in here], dim=1
                ).to(dtype)
                entry = (big_a, big_b, 1.0, group)
            layout.entries[layer] = entry
            layout.ranks = max(layout.ranks, sum(r for _, r in group))
        return layout

    def _hook(self, module: Any, args: tuple[Any, ...], output: Any) -> Any:
        plan = self._plan
        if plan is None or not self.active:
            return output
        layout, masks = plan
        entry = layout.entries.get(module)
        if entry is None:
            return output
        import torch.nn.functional as F

        lora_a, lora_b, alpha, group = entry
        h = F.linear(args[0].to(lora_a.dtype), lora_a)
        mask = masks[group]
        if mask is not None:
            h = h * mask
        flat = output.view(-1, output.shape[-1])
        flat.addmm_(h.reshape(-1, h.shape[-1]).to(output.dtype), lora_b.t(), alpha=alpha)
        return output
