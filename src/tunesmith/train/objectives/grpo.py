"""GRPO: reinforcement fine-tuning against a grader (`method: reinforcement`).

A step takes its prompts (batch_size x grad_accum of them, as any step takes its rows), and in
the loop's rollout hook (before anything is collated):
  1. samples K = `samples_per_prompt` completions of each prompt from the policy itself
     (rollout.py: batched, KV cache, seeded by the step, eval mode, no grad, adapters on);
  2. scores each completion with the grader (an OpenAI grader object, `tunesmith.graders`:
     the same code `graders/run` and evaluation use). A grader that fails on a sample (an item
     without the field a template reads, a python grader's error or time-out) gives reward 0
     and counts in `grader_errors`; a sample that is not the JSON a template reads scores 0
     (the model's fault: `sample_parse_error`, as OpenAI grades it);
  3. turns rewards into advantages per group of K: A = r - mean(group), divided by the group's
     std when `scale_rewards`. A group whose K rewards are all equal carries no signal: its
     advantages are exactly 0 (`frac_zero_std` says how many groups), and with `kl_beta` 0 its
     completions are not even run forward (their gradient would be exactly zero);
  4. with `kl_beta` > 0, the reference log-probs of the sampled tokens: the policy with its
     adapter disabled (LoRA: no second copy of the model, as for DPO; on top of an SFT
     adapter, that adapter is part of the frozen weights, so it is the reference).

Then the loop's forward/backward runs GRPOLoss over prompt + completion rows, at most
FORWARD_ROWS sequences per forward (a micro-batch is split; the sum is the same). Per completion
token t, with ratio = exp(log pi(t) - log pi_old(t)) (log-probs of the distribution sampled
from: logits / temperature, for the policy and the reference alike):

    loss_t = -min(ratio A, clip(ratio, 1 - eps, 1 + eps) A)  +  kl_beta * KL_t
    KL_t   = exp(ref - logp) - (ref - logp) - 1            (k3: unbiased, never negative)

averaged over the completion's tokens, summed over completions. The unit is *completions*:
the loop divides by the step's number of completions (every sampled one, zero-advantage ones
included), so the gradient is GRPO's mean over completions however the rows were split into
micro-batches. pi_old is the policy at rollout time; one optimisation pass follows each rollout,
so pi_old is the forward's own log-prob, detached (ratio 1, the clip inactive, the gradient
exactly the policy gradient A grad log pi) without a second forward. The LM head runs on
completion positions only.

Metrics (metrics.jsonl, events): reward (mean), reward_std, one `reward/<name>` per sub-grader
of a multi grader, completion_length (tokens), truncated_fraction (completions that hit
max_new_tokens), frac_zero_std, clip_fraction, grader_errors, kl (with kl_beta > 0).
Validation (the loop's `evaluate`): the mean reward of one greedy completion per held-out
prompt (`eval_samples` > 1: that many sampled ones, seeded the same at every evaluation), on
at most VAL_PROMPTS prompts: `val_reward`, and `val_loss = -val_reward`, so the best checkpoint
and early stopping (lowest val_loss) keep the highest reward.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tunesmith.data.tokenize import IGNORE_INDEX
from tunesmith.errors import ConfigError
from tunesmith.train.batching import Row, collate
from tunesmith.train.objectives.base import token_logps

VAL_PROMPTS = 64  # held-out prompts scored per validation (the first ones, always the same)
# Completions per forward/backward: a micro-batch of batch_size x K sequences is split into
# chunks of at most this many (the gradient is the same: the loop sums over them), so the
# activations held for the backward stay bounded however large K is.
FORWARD_ROWS = 8
GRADER_PARAM = "method.reinforcement.grader"
# Statistics a rollout adds to the step (sums over completions; all-reduced by the loop).
ROLLOUT_KEYS = (
    "completions",
    "reward_sum",
    "reward_sq",
    "length_sum",
    "truncated",
    "groups",
    "zero_std_groups",
    "grader_errors",
)


# ---------------------------------------------------------------------------------------------
# The grader: checked before training, then the reward of each completion
# ---------------------------------------------------------------------------------------------


def check_grader(options: Any, item: Mapping[str, Any] | None = None) -> None:
    """A ConfigError naming the field (`method.reinforcement.grader.<path>`) for a grader that
    cannot be used, before anything is loaded; with `item` (a training row's fields) the
    templates' `{{item.x}}` are checked against it too. Python graders run user code: only
    with `method.reinforcement.allow_python: true` (a server sets it from its operator's
    setting, never from a request)."""
    from tunesmith.graders import validate_grader

    if not isinstance(options.grader, Mapping) or not options.grader:
        raise ConfigError(
            "reinforcement fine-tuning needs a grader object that scores each completion",
            where=GRADER_PARAM,
            param=GRADER_PARAM,
            hint='e.g. {type: string_check, name: exact, input: "{{sample.output_text}}", '
            'reference: "{{item.reference_answer}}", operation: eq}',
        )
    problems = validate_grader(options.grader, allow_python=options.allow_python, item=item)
    if not problems:
        return
    first = problems[0]
    path, _, text = first.partition(": ")
    param = "method.reinforcement." + path if path.startswith("grader") else GRADER_PARAM
    more = (
        f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if len(problems) > 1 else ""
    )
    hint = None
    if "allow_python" in first:
        hint = (
            "python graders run your code (sandboxed); to allow it set "
            "method.reinforcement.allow_python: true"
        )
    raise ConfigError(f"{param}: {text}{more}", where=param, param=param, hint=hint,
                      code="invalid_grader")  # fmt: skip


class Rewards:
    """Scores completions with the run's grader: (rewards, per-sub-grader rewards, errors)."""

    def __init__(self, options: Any):
        from tunesmith.graders import build_grader_object, sub_grader_names, uses_python

        self.grader = build_grader_object(options.grader, allow_python=options.allow_python)
        self.subs = sub_grader_names(options.grader)
        # a python grader is one process per call: overlap them (they wait on a child process)
        self.workers = 4 if uses_python(options.grader) else 1

    def _one(self, text: str, messages: Sequence[Mapping[str, Any]], item: Mapping[str, Any]):
        from tunesmith.graders import GraderError, Item, Sample

        try:
            score, run = self.grader.run(Sample(text), Item("", messages, item))
            score = float(score)
            if not math.isfinite(score):
                return 0.0, {}, 1
            return score, dict(run.sub_rewards), 0
        except GraderError:
            return 0.0, {}, 1
        except Exception:  # a grader bug must not stop training: reward 0, counted
            return 0.0, {}, 1

    def score(
        self,
        texts: Sequence[str],
        prompts: Sequence[Sequence[Mapping[str, Any]]],
        items: Sequence[Mapping[str, Any]],
    ) -> tuple[list[float], dict[str, list[float]], int]:
        jobs = list(zip(texts, prompts, items, strict=True))
        if self.workers > 1 and len(jobs) > 1:
            with ThreadPoolExecutor(self.workers) as pool:
                done = list(pool.map(lambda j: self._one(*j), jobs))
        else:
            done = [self._one(*j) for j in jobs]
        rewards = [d[0] for d in done]
        subs = {name: [float(d[1].get(name, 0.0)) for d in done] for name in self.subs}
        return rewards, subs, sum(d[2] for d in done)


def group_advantages(rewards: torch.Tensor, k: int, *, scale: bool) -> tuple[torch.Tensor, int]:
    """(advantage of each completion, groups whose K rewards are all equal). `rewards` holds
    consecutive groups of `k`. A = r - mean; / (std + 1e-4) with `scale` (the unbiased std, so
    K = 2 works); exactly 0 in an all-equal group."""
    groups = rewards.double().view(-1, k)
    centred = groups - groups.mean(dim=1, keepdim=True)
    flat = (groups.max(dim=1).values - groups.min(dim=1).values) == 0
    if scale:
        centred = centred / (groups.std(dim=1, keepdim=True) + 1e-4)
    centred[flat] = 0.0
    return centred.view(-1).float(), int(flat.sum())


# ---------------------------------------------------------------------------------------------
# Rows: prompts before the rollout, completions after it
# ---------------------------------------------------------------------------------------------


@dataclass
class PromptRow:
    """A prompt as the loop's data order sees it (rows are never packed)."""

    input_ids: list[int]
    messages: list[dict[str, Any]] = field(default_factory=list)
    item: dict[str, Any] = field(default_factory=dict)
    blank: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)


def prompt_rows(examples: Sequence[Any]) -> list[PromptRow]:
    """One row per prepared prompt (`data.prepare.PromptExample`)."""
    return [PromptRow(list(e.input_ids), list(e.messages), dict(e.item)) for e in examples]


@dataclass
class CompletionRow:
    """Prompt + one sampled completion: labels on the completion, its advantage, and (KL) the
    reference log-prob of each completion token."""

    row: Row
    advantage: float = 0.0
    ref_logps: list[float] = field(default_factory=list)
    stats: list[float] | None = None  # the step's rollout statistics ride on its first row

    @property
    def n_tokens(self) -> int:
        return self.row.n_trained


def completion_row(prompt: Sequence[int], completion: Sequence[int]) -> Row:
    ids = list(prompt) + list(completion)
    return Row(ids, [IGNORE_INDEX] * len(prompt) + list(completion), list(range(len(ids))))


def blank_completion(prompt: PromptRow) -> CompletionRow:
    ids = prompt.input_ids[:1] or [0]
    return CompletionRow(Row(ids, [IGNORE_INDEX] * len(ids), list(range(len(ids)))))


# ---------------------------------------------------------------------------------------------
# The loss
# ---------------------------------------------------------------------------------------------


class GRPOLoss(nn.Module):
    """forward(input_ids, position_ids, labels, advantages, ref_logps, stats, n_completions) ->
    {"loss": summed per-completion losses, "count", and summed statistics}."""

    def __init__(
        self,
        model: nn.Module,
        *,
        clip_epsilon: float,
        kl_beta: float,
        keys: Sequence[str],
        temperature: float = 1.0,
    ):
        super().__init__()
        self.model = model
        self.temperature = temperature
        self.eps = clip_epsilon
        self.beta = kl_beta
        self.keys = list(keys)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        labels: torch.Tensor,
        advantages: torch.Tensor,
        ref_logps: torch.Tensor,
        stats: torch.Tensor,
        n_completions: torch.Tensor,
        old_logps: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        logp, seq = token_logps(self.model, input_ids, position_ids, labels, self.temperature)
        n_tok = torch.zeros(input_ids.shape[0], device=logp.device).index_add(
            0, seq, torch.ones_like(logp)
        )
        old = logp.detach() if old_logps is None else old_logps.float()
        adv = advantages.float()[seq]
        ratio = torch.exp(logp - old)
        clipped = ratio.clamp(1.0 - self.eps, 1.0 + self.eps)
        per_token = -torch.minimum(ratio * adv, clipped * adv)
        out: dict[str, torch.Tensor] = {}
        if self.beta > 0:
            d = ref_logps.float() - logp
            kl = torch.exp(d) - d - 1.0
            per_token = per_token + self.beta * kl
            out["kl_tokens"] = kl.detach().sum()
        weight = 1.0 / n_tok.clamp(min=1.0)[seq]  # each completion: the mean over its tokens
        loss = (per_token * weight).sum()
        with torch.no_grad():
            was_clipped = ((ratio * adv) > (clipped * adv)).float().sum()
        out.update(
            loss=loss,
            count=(n_tok > 0).sum(),
            clipped_tokens=was_clipped,
            completion_tokens=torch.tensor(float(logp.shape[0])),
        )
        for i, key in enumerate(self.keys):
            out[key] = stats[i]
        return out


# ---------------------------------------------------------------------------------------------
# The objective
# ---------------------------------------------------------------------------------------------


def _seed(seed: int, step: int, rank: int, salt: int = 0) -> int:
    return (seed * 1_000_003 + step * 9_176 + rank * 131 + salt) % (2**63 - 1)


class GRPOObjective:
    """GRPO behind the objective protocol (objectives/base.py); unit = completions."""

    name = "reinforcement"
    unit = "completions"

    def __init__(self, pad_id: int, options: Any, tokenizer: Any, *, max_seq_len: int, seed: int):
        from tunesmith.models.load import stop_token_ids

        self.pad_id = pad_id
        self.options = options
        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        self.seed = seed
        self.rewards = Rewards(options)
        self.sub_keys = [f"reward/{name}" for name in self.rewards.subs]
        self.stat_keys = [*ROLLOUT_KEYS, *self.sub_keys]
        self.stop_ids = list(stop_token_ids(tokenizer, None))
        self._stops_from_model = False

    def _stops(self, model: Any) -> None:
        """Add the model's own end-of-turn ids (its generation config) once."""
        if not self._stops_from_model:
            from tunesmith.models.load import stop_token_ids

            config = getattr(model, "generation_config", None)
            self.stop_ids = list(
                dict.fromkeys(self.stop_ids + stop_token_ids(self.tokenizer, config))
            )
            self._stops_from_model = True

    # -- protocol ---------------------------------------------------------------------------

    def loss_module(self, model: nn.Module) -> nn.Module:
        o = self.options
        return GRPOLoss(
            model,
            clip_epsilon=o.clip_epsilon,
            kl_beta=o.kl_beta,
            keys=self.stat_keys,
            temperature=o.temperature,
        )

    def blank(self, row: PromptRow) -> PromptRow:
        return PromptRow(row.input_ids, blank=True)

    def count(self, batch: dict[str, Any]) -> int:
        return int(batch["n_completions"].item())

    def collate(self, rows: Sequence[CompletionRow], device: Any) -> dict[str, Any]:
        """Pad the rows that carry a gradient into one batch. With kl_beta 0 a zero-advantage
        completion adds exactly nothing, so it is left out of the forward (at least one row
        stays, so every rank runs a forward); it still counts as a completion of the step."""
        real = [r for r in rows if r.n_tokens > 0]
        run = [r for r in real if r.advantage != 0.0] if self.options.kl_beta == 0 else real
        if not run:
            run = [rows[0]] if not real else [real[0]]
        batch = collate([r.row for r in run], self.pad_id, device)
        batch["advantages"] = torch.tensor([r.advantage for r in run], device=device)
        refs = [x for r in run for x in r.ref_logps] if self.options.kl_beta > 0 else []
        batch["ref_logps"] = torch.tensor(refs, dtype=torch.float32, device=device)
        first = next((r.stats for r in rows if r.stats is not None), None)
        stats = first if first is not None else [0.0] * len(self.stat_keys)
        batch["stats"] = torch.tensor(stats, dtype=torch.float64)
        batch["n_completions"] = torch.tensor(len(real))
        return batch

    def step_metrics(self, sums: dict[str, float], units: int) -> dict[str, float]:
        n = max(1.0, sums.get("completions", 0.0))
        mean = sums.get("reward_sum", 0.0) / n
        var = max(0.0, sums.get("reward_sq", 0.0) / n - mean * mean)
        out = {
            "reward": mean,
            "reward_std": math.sqrt(var),
            "completion_length": sums.get("length_sum", 0.0) / n,
            "truncated_fraction": sums.get("truncated", 0.0) / n,
            "frac_zero_std": sums.get("zero_std_groups", 0.0) / max(1.0, sums.get("groups", 0.0)),
            "clip_fraction": sums.get("clipped_tokens", 0.0)
            / max(1.0, sums.get("completion_tokens", 0.0)),
            "grader_errors": int(sums.get("grader_errors", 0.0)),
        }
        for key in self.sub_keys:
            out[key] = sums.get(key, 0.0) / n
        if self.options.kl_beta > 0:
            out["kl"] = sums.get("kl_tokens", 0.0) / max(1.0, sums.get("completion_tokens", 0.0))
        return out

    def validation_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        n = max(1.0, sums.get("completions", 0.0))
        reward = sums.get("reward_sum", 0.0) / n
        out = {
            "val_loss": -reward,
            "val_reward": reward,
            "val_completion_length": sums.get("length_sum", 0.0) / n,
            "val_grader_errors": int(sums.get("grader_errors", 0.0)),
            "val_prompts": int(sums.get("prompts", 0.0)),
        }
        for key in self.sub_keys:
            out["val_" + key] = sums.get(key, 0.0) / n
        return out

    # -- sampling and scoring ----------------------------------------------------------------

    def _caps(self, prompts: Sequence[PromptRow]) -> list[int]:
        """max_new_tokens, cut so that prompt + completion fits max_seq_len."""
        cap = self.options.max_new_tokens
        return [max(1, min(cap, self.max_seq_len - len(p))) for p in prompts]

    def _generate(
        self,
        ctx: Any,
        prompts: Sequence[PromptRow],
        k: int,
        *,
        temperature: float,
        generator: torch.Generator | None,
    ) -> list[list[int]]:
        from tunesmith.train.objectives.rollout import sample, sampling_mode

        self._stops(ctx.model)
        ids = [p.input_ids for p in prompts for _ in range(k)]
        caps = [c for c in self._caps(prompts) for _ in range(k)]
        with sampling_mode(ctx.model):
            return sample(
                ctx.model,
                ids,
                max_new_tokens=caps,
                temperature=temperature,
                top_p=self.options.top_p,
                stop_ids=self.stop_ids,
                pad_id=self.pad_id,
                generator=generator,
            )

    def _score(
        self, prompts: Sequence[PromptRow], k: int, completions: Sequence[Sequence[int]]
    ) -> tuple[list[float], dict[str, list[float]], int]:
        stops = set(self.stop_ids)
        texts = []
        for c in completions:
            body = c[:-1] if c and c[-1] in stops else c
            texts.append(self.tokenizer.decode(body, skip_special_tokens=True).strip())
        msgs = [p.messages for p in prompts for _ in range(k)]
        items = [p.item for p in prompts for _ in range(k)]
        return self.rewards.score(texts, msgs, items)

    def _reference(self, ctx: Any, rows: Sequence[Row]) -> list[list[float]]:
        """Per completion token, the log-prob under the reference (adapter disabled)."""
        from tunesmith.train.objectives.rollout import sampling_mode

        model = ctx.model
        if not hasattr(model, "disable_adapter"):
            raise ConfigError(
                "kl_beta > 0 needs an adapter (the reference is the model with it disabled); "
                "full fine-tuning would need a second copy of the model",
                param="method.reinforcement.kl_beta",
            )
        out: list[list[float]] = []
        with sampling_mode(model), model.disable_adapter():
            for start in range(0, len(rows), 16):
                chunk = list(rows[start : start + 16])
                batch = collate(chunk, self.pad_id, ctx.device)
                logp, seq = token_logps(
                    model,
                    batch["input_ids"],
                    batch["position_ids"],
                    batch["labels"],
                    self.options.temperature,
                )
                per = [[] for _ in chunk]  # type: list[list[float]]
                for value, row in zip(logp.tolist(), seq.tolist(), strict=True):
                    per[row].append(value)
                out.extend(per)
        return out

    def rollout(self, ctx: Any, micro: list[list[PromptRow]]) -> list[list[CompletionRow]]:
        """Sample, score and weigh this rank's prompts of the step (see the module docstring)."""
        k = self.options.samples_per_prompt
        step = ctx.state.step + 1
        device = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
        gen = torch.Generator(device=device).manual_seed(_seed(self.seed, step, ctx.info.rank))
        prompts = [p for m in micro for p in m if not p.blank]
        completions = (
            self._generate(ctx, prompts, k, temperature=self.options.temperature, generator=gen)
            if prompts
            else []
        )
        rewards, subs, errors = self._score(prompts, k, completions) if prompts else ([], {}, 0)
        r = torch.tensor(rewards, dtype=torch.float32)
        adv, flat = group_advantages(r, k, scale=self.options.scale_rewards) if prompts else (r, 0)
        rows = [
            completion_row(p.input_ids, completions[i * k + j])
            for i, p in enumerate(prompts)
            for j in range(k)
        ]
        refs = self._reference(ctx, rows) if self.options.kl_beta > 0 and rows else []
        stops = set(self.stop_ids)
        stats = {
            "completions": float(len(rows)),
            "reward_sum": float(r.sum()) if rows else 0.0,
            "reward_sq": float((r.double() ** 2).sum()) if rows else 0.0,
            "length_sum": float(sum(len(c) for c in completions)),
            "truncated": float(sum(1 for c in completions if not c or c[-1] not in stops)),
            "groups": float(len(prompts)),
            "zero_std_groups": float(flat),
            "grader_errors": float(errors),
        }
        for name, values in subs.items():
            stats[f"reward/{name}"] = float(sum(values))
        ordered = [stats.get(key, 0.0) for key in self.stat_keys]
        # every micro-batch becomes the same number of forward chunks on every rank (DDP runs
        # them in step): ceil(batch_size x K / FORWARD_ROWS), a blank row where one is empty
        chunks = max(1, math.ceil(ctx.spec.batch_size * k / FORWARD_ROWS))
        out: list[list[CompletionRow]] = []
        at = 0
        for m in micro:
            batch: list[CompletionRow] = []
            for p in m:
                if p.blank:
                    batch.append(blank_completion(p))
                    continue
                for _ in range(k):
                    batch.append(CompletionRow(rows[at], float(adv[at]), refs[at] if refs else []))
                    at += 1
            size = math.ceil(len(batch) / chunks)
            for c in range(chunks):
                part = batch[c * size : (c + 1) * size]
                out.append(part or [blank_completion(m[0])])
        out[0][0].stats = ordered
        return out

    def evaluate(self, ctx: Any) -> dict[str, float]:
        """Validation: the mean reward on the held-out prompts (see the module docstring);
        every rank scores its share, the sums are all-reduced."""
        from tunesmith.train import distributed as dist

        world, rank = ctx.info.world_size, ctx.info.rank
        held = ctx.val_rows[:VAL_PROMPTS]
        mine = held[rank::world]
        n = self.options.eval_samples
        sums = {key: 0.0 for key in ("completions", "reward_sum", "length_sum", "grader_errors",
                                     "prompts", *self.sub_keys)}  # fmt: skip
        if mine:
            device = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
            gen = torch.Generator(device=device).manual_seed(_seed(self.seed, 0, rank, salt=7))
            temperature = self.options.temperature if n > 1 else 0.0
            completions = self._generate(ctx, mine, n, temperature=temperature, generator=gen)
            rewards, subs, errors = self._score(mine, n, completions)
            sums.update(
                completions=float(len(completions)),
                reward_sum=float(sum(rewards)),
                length_sum=float(sum(len(c) for c in completions)),
                grader_errors=float(errors),
                prompts=float(len(mine)),
            )
            for name, values in subs.items():
                sums[f"reward/{name}"] = float(sum(values))
        keys = sorted(sums)
        total = dist.all_reduce_sum(torch.tensor([sums[k] for k in keys], dtype=torch.float64))
        return self.validation_metrics({key: total[i].item() for i, key in enumerate(keys)})
