"""Tokenization with loss masks, rendered by the model's own chat template.

Why it is built this way: training and serving must see the same tokens. Inference feeds the
model `apply_chat_template(messages[:i], add_generation_prompt=True, tokenize=True)` (see
`tunesmith.inference.engine.prompt_ids`), so for every assistant turn the ids before its answer
must be exactly those. We therefore

1. render prefixes incrementally with the template itself: P_i = messages[:i] with the
   generation prompt, F_i = messages[:i+1] (through the end of assistant turn i). Rendering
   prefixes (never single messages) keeps template logic such as a default system prompt
   injected when there is none identical to what inference renders;
2. split the text into segments: the prompt delta P_i[len(F_{i-1}):] (no loss), the answer up to
   and including the end-of-turn marker (`<|im_end|>`; loss when trained, so the model learns
   to stop) and the template's tail after it (the newline; no loss);
3. tokenize the segments separately (`add_special_tokens=False`, batched) and concatenate;
4. check the boundary for every assistant turn after the first by also tokenizing P_i whole:
   when the concatenation differs (a BPE merge across a segment boundary), the prompt ids are
   replaced by the whole-prompt ids (what inference feeds for that history) and labels are
   carried over where tokens still align, so the last answer always has exactly the prompt ids
   inference uses; so does every earlier answer unless such a merge happened. It only happens
   when an earlier answer starts with whitespace the template's newline can merge with; then
   that earlier turn cannot match inference too (one sequence cannot hold both tokenizations),
   and the example reports `retokenized > 0` (the validator warns, naming the line).

Length is bounded by characters before anything is rendered: a conversation whose text has
more characters than `max_seq_len` times the longest token's characters cannot fit in
`max_seq_len` tokens, so it is rejected (`too_long`) without tokenizing it (a multi-MB row
would otherwise cost GBs and seconds); with `truncate` it is cut to twice that bound first, far
past the `max_seq_len` tokens that are kept.

`train_on="assistant"` (default) trains assistant turns with weight 1 (the default) and their
end-of-turn token; conversations marked `completion_only` (prompt/completion, input/output) train
only the final answer, as does `train_on="last"` for every conversation; `train_on="all"` trains
every token.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tunesmith.data.formats import RowError, message_dicts
from tunesmith.data.records import Conversation, Message, PreferencePair, Prompt, Source
from tunesmith.errors import ConfigError

IGNORE_INDEX = -100
TRAIN_ON = ("assistant", "last", "all")
EOT_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>", "<|endoftext|>")
MAX_CHARS_PER_TOKEN = 128  # a vocabulary with longer tokens still gets a bounded check


@dataclass
class TokenizedExample:
    """Token ids and labels (-100 where no loss) of one conversation, plus where it came from."""

    input_ids: list[int]
    labels: list[int]
    source: Source | None = None
    truncated: bool = False
    prompt_tokens: int = field(default=0)  # tokens before the first trained token
    # Later turns whose history had to be re-tokenized as one text (see the module docstring):
    # then an earlier answer's first token merged with the text before it, and that earlier
    # turn's prompt differs from inference by that one token.
    retokenized: int = 0

    @property
    def n_trained(self) -> int:
        return len(self.labels) - self.labels.count(IGNORE_INDEX)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class TokenizedPair:
    """A preference pair as two tokenized conversations sharing the prompt."""

    chosen: TokenizedExample
    rejected: TokenizedExample
    prompt_length: int
    source: Source | None = None


@dataclass
class _Plan:
    """A rendered conversation: text segments and whole-prompt checks, before tokenization."""

    segments: list[tuple[str, bool]]  # (text, carries loss)
    checks: list[tuple[int, str]]  # (segments up to turn i's answer, P_i text)


_SAMPLES: list[list[dict[str, Any]]] = [
    [{"role": "user", "content": "Hi there, how are you?"}],
    [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": " A: yes.\n"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three\n\n"},
        {"role": "assistant", "content": "  four"},
    ],
]


class ChatTokenizer:
    """Renders and tokenizes conversations for one tokenizer; caches template facts."""

    def __init__(self, tokenizer: Any):
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError("the tokenizer has no chat template", hint="use a chat model")
        self.tokenizer = tokenizer
        self.template = tokenizer.chat_template
        vocab = tokenizer.get_vocab()
        # No token spells more characters than its vocabulary entry has (byte-level BPE: one
        # symbol per byte; sentencepiece: one per character), so a text of n characters is at
        # least n / max_token_chars tokens.
        longest = max((len(t) for t in vocab), default=MAX_CHARS_PER_TOKEN)
        self.max_token_chars = max(1, min(longest, MAX_CHARS_PER_TOKEN))
        markers = [tokenizer.eos_token] if tokenizer.eos_token else []
        markers += [m for m in EOT_MARKERS if m in vocab and m not in markers]
        self.markers = [m for m in markers if m]
        self.specials = self._control_tokens()
        self._special_re = (
            re.compile("|".join(re.escape(s) for s in self.specials)) if self.specials else None
        )
        self._fast_render = self._make_fast_render()
        self._split_re, self._special_ids = self._make_splitter()
        self._cache: dict[str, list[int]] = {}
        self._calls = 0

    def _control_tokens(self) -> list[str]:
        """Special tokens the template uses to frame turns, plus bos/eos/pad: text in a message
        that spells one would be read as that control token (a forged turn boundary). Other
        special tokens (e.g. code-model markers such as <filename>) are left alone."""
        tok = self.tokenizer
        specials = {str(t) for t in getattr(tok, "all_special_tokens", [])}
        decoder = getattr(tok, "added_tokens_decoder", {}) or {}
        specials |= {t.content for t in decoder.values() if getattr(t, "special", False)}
        scaffold = ""
        for msgs in _SAMPLES:
            try:
                scaffold += self._slow_render(msgs, True)
            except Exception:
                continue
        control = {s for s in specials if s and s in scaffold}
        control |= {t for t in (tok.eos_token, tok.bos_token, tok.pad_token) if t}
        control |= {m for m in self.markers if m in specials}
        return sorted(control, key=len, reverse=True)

    # -- rendering --------------------------------------------------------------------------
    # Fast paths are used only after they are verified to give the same output as the plain
    # transformers calls on sample conversations, and re-checked on a sample as data flows.
    def _slow_render(self, messages: Sequence[dict[str, Any]], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=generation_prompt
        )

    def _make_fast_render(self) -> Any:
        """The compiled template rendered directly (skips per-call conversion overhead)."""
        try:
            from transformers.utils.chat_template_utils import _compile_jinja_template

            compiled = _compile_jinja_template(self.tokenizer.chat_template)
            extra = dict(self.tokenizer.special_tokens_map)

            def fast(messages: Sequence[dict[str, Any]], generation_prompt: bool) -> str:
                return compiled.render(
                    messages=messages, add_generation_prompt=generation_prompt, **extra
                )

            checked = 0
            for msgs in _SAMPLES:
                for gen in (True, False):
                    try:
                        want = self._slow_render(msgs, gen)
                    except Exception:
                        continue  # the template refuses this sample (e.g. no system role)
                    if fast(msgs, gen) != want:
                        return None
                    checked += 1
            return fast if checked else None
        except Exception:
            return None

    def render(self, messages: Sequence[dict[str, Any]], generation_prompt: bool) -> str:
        if self._fast_render is None:
            return self._slow_render(messages, generation_prompt)
        self._calls += 1
        text = self._fast_render(messages, generation_prompt)
        if self._calls % 997 == 1 and text != self._slow_render(messages, generation_prompt):
            self._fast_render = None
            return self._slow_render(messages, generation_prompt)
        return text

    # -- encoding ---------------------------------------------------------------------------
    def _make_splitter(self) -> tuple[Any, dict[str, int]]:
        """Special tokens always split a fast tokenizer's input, so text can be encoded piece
        by piece between them, and repeated pieces ("user\n", default system prompts) cached."""
        backend = getattr(self.tokenizer, "_tokenizer", None)
        decoder = getattr(self.tokenizer, "added_tokens_decoder", {}) or {}
        specials = {
            t.content: i
            for i, t in decoder.items()
            if getattr(t, "special", False)
            and not getattr(t, "lstrip", True)
            and not getattr(t, "rstrip", True)
            and not getattr(t, "normalized", True)
        }
        if backend is None or not hasattr(backend, "encode_batch") or not specials:
            return None, {}
        pattern = re.compile(
            "(" + "|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")"
        )
        self._split_re, self._special_ids = pattern, specials
        self._cache = {}
        try:
            samples = [" x\n\n y  "]
            for msgs in _SAMPLES:
                try:
                    samples.append(self._slow_render(msgs, False) + samples[0])
                except Exception:
                    continue
            if len(samples) < 2 or self._encode_split(samples) != self._encode_plain(samples):
                return None, {}
        except Exception:
            return None, {}
        return pattern, specials

    def _encode_plain(self, texts: list[str]) -> list[list[int]]:
        return [list(x) for x in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def _encode_split(self, texts: list[str]) -> list[list[int]]:
        backend = self.tokenizer._tokenizer
        assert self._split_re is not None
        split = [[p for p in self._split_re.split(t) if p] for t in texts]
        cache = self._cache
        todo = list(
            {
                p: None
                for parts in split
                for p in parts
                if p not in cache and p not in self._special_ids
            }
        )
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
        fresh = (
            {p: e.ids for p, e in zip(todo, encode(todo, add_special_tokens=False), strict=True)}
            if todo
            else {}
        )
        # Cache only pieces that repeat within this batch: template scaffolding ("user\n", a
        # default system prompt), not message text, so the cache stays tiny.
        if fresh and len(cache) < 2_000:
            counts = Counter(p for parts in split for p in parts if p in fresh)
            for p, n in counts.items():
                if n >= 8 and len(p) <= 1024:
                    cache[p] = fresh[p]
        out = []
        for parts in split:
            ids: list[int] = []
            for p in parts:
                special = self._special_ids.get(p)
                if special is not None:
                    ids.append(special)
                else:
                    ids.extend(fresh[p] if p in fresh else cache[p])
            out.append(ids)
        return out

    def encode_many(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, exactly as `tokenizer(text, add_special_tokens=False)`."""
        if not texts:
            return []
        if self._split_re is None:
            return self._encode_plain(texts)
        out = self._encode_split(texts)
        longest = max(range(len(texts)), key=lambda i: len(texts[i]))
        if out[longest] != self._encode_plain([texts[longest]])[0]:
            self._split_re = None  # never seen; fall back for good rather than risk it
            return self._encode_plain(texts)
        return out

    def bound_length(self, conv: Conversation, max_seq_len: int, truncate: bool) -> Conversation:
        """Reject (or, with `truncate`, cut) a conversation by its characters before it is
        rendered or tokenized (see the module docstring)."""
        limit = max_seq_len * self.max_token_chars
        total = sum(len(m.content) for m in conv.messages)
        if total <= limit:
            return conv
        if not truncate:
            raise RowError(
                "too_long",
                f"example is {total:,} characters, more than max_seq_len {max_seq_len} tokens "
                f"can hold (a token is at most {self.max_token_chars} characters here); "
                "rejected before tokenizing",
                conv.source,
                "messages",
                hint="raise --max-seq-len, shorten the example, or pass --truncate",
            )
        budget = 2 * limit
        if total <= budget:
            return conv
        messages = []
        for m in conv.messages:  # later messages lie past the kept tokens: emptied
            cut = m.content[:budget]
            budget -= len(cut)
            messages.append(replace(m, content=cut))
        return replace(conv, messages=tuple(messages))

    def plan(self, conv: Conversation, train_on: str = "assistant") -> _Plan:
        """Render `conv` into loss-marked text segments (raises `RowError`)."""
        source = conv.source
        self._check_specials(conv.messages, source)
        msgs = message_dicts(conv.messages)
        turns = [i for i, m in enumerate(conv.messages) if m.role == "assistant"]
        if not turns:
            raise RowError("no_assistant", "has no assistant message", source, "messages")
        last = turns[-1]
        segments: list[tuple[str, bool]] = []
        checks: list[tuple[int, str]] = []
        done = ""
        for n, i in enumerate(turns):
            try:
                prompt = self.render(msgs[:i], True)
                full = self.render(msgs[: i + 1], False)
            except Exception as exc:  # e.g. a template's raise_exception("roles must alternate")
                raise RowError(
                    "template",
                    f"the model's chat template cannot render this conversation: {exc}",
                    source,
                    f"messages[{i}]",
                ) from None
            if not prompt.startswith(done) or not full.startswith(prompt):
                raise RowError(
                    "template",
                    "the model's chat template does not render this conversation "
                    "as a sequence of prefixes, so answer boundaries are ambiguous",
                    source,
                    f"messages[{i}]",
                    hint="use a model whose template renders turns in order",
                )
            segments.append((prompt[len(done) :], train_on == "all"))
            if n:
                checks.append((len(segments), prompt))
            answer = full[len(prompt) :]
            only_last = conv.completion_only or train_on == "last"
            trained = self._trained(conv.messages[i], only_last and i != last)
            cut = self._answer_end(answer, conv.messages[i].content)
            segments.append((answer[:cut], trained or train_on == "all"))
            if cut < len(answer):
                segments.append((answer[cut:], train_on == "all"))
            done = full
        if last != len(msgs) - 1:  # trailing messages after the last answer (context only)
            rest = self.render(msgs, False)
            if len(rest) > len(done) and rest.startswith(done):
                segments.append((rest[len(done) :], train_on == "all"))
        return _Plan(segments, checks)

    @staticmethod
    def _trained(message: Message, earlier_turn_of_completion: bool) -> bool:
        return message.trained and not earlier_turn_of_completion

    def _answer_end(self, answer: str, content: str) -> int:
        """Index just past the end-of-turn marker that closes this answer (all of it if none)."""
        start = len(content) if answer.startswith(content) else 0
        best = -1
        for marker in self.markers:
            pos = answer.find(marker, start)
            if pos >= 0 and (best < 0 or pos + len(marker) < best):
                best = pos + len(marker)
        return best if best >= 0 else len(answer)

    def _check_specials(self, messages: Sequence[Message], source: Source | None) -> None:
        if self._special_re is None:
            return
        for i, m in enumerate(messages):
            found = self._special_re.search(m.content)
            if found:
                raise RowError(
                    "special_token",
                    f"content contains the special token text "
                    f"{found.group(0)!r}, which the tokenizer would read as a control token",
                    source,
                    f"messages[{i}].content",
                    hint="remove it from the text",
                )

    # -- assembly ---------------------------------------------------------------------------
    def assemble(
        self, plan: _Plan, seg_ids: list[list[int]], check_ids: list[list[int]]
    ) -> tuple[list[int], list[int], int, int]:
        """Concatenate segment ids with labels; enforce whole-prompt ids at each later turn.

        Returns (ids, labels, index of the first trained token, number of re-tokenized turns).
        """
        merged = 0
        ids: list[int] = []
        labels: list[int] = []
        check_at = {n: c for (n, _), c in zip(plan.checks, check_ids, strict=True)}
        for k, ((_, trained), piece) in enumerate(zip(plan.segments, seg_ids, strict=True)):
            ids.extend(piece)
            labels.extend(piece if trained else [IGNORE_INDEX] * len(piece))
            if k + 1 in check_at:
                want = check_at[k + 1]
                if ids != want:
                    labels = _realign(ids, labels, want)
                    ids = list(want)
                    merged += 1
        first = next(
            (j for j, (t, lab) in enumerate(zip(ids, labels, strict=True)) if t == lab),
            len(labels),
        )
        return ids, labels, first, merged


def _realign(ids: list[int], labels: list[int], want: list[int]) -> list[int]:
    """Labels for `want`, copied from (ids, labels) where tokens align from either end."""
    out = [IGNORE_INDEX] * len(want)
    head = 0
    while head < min(len(ids), len(want)) and ids[head] == want[head]:
        out[head] = labels[head]
        head += 1
    tail = 0
    while (
        tail < min(len(ids), len(want)) - head
        and ids[len(ids) - 1 - tail] == want[len(want) - 1 - tail]
    ):
        out[len(want) - 1 - tail] = labels[len(ids) - 1 - tail]
        tail += 1
    return out


_CACHE: dict[int, ChatTokenizer] = {}


def chat_tokenizer(tokenizer: Any) -> ChatTokenizer:
    """A cached `ChatTokenizer` for this tokenizer object."""
    if isinstance(tokenizer, ChatTokenizer):
        return tokenizer
    key = id(tokenizer)
    cached = _CACHE.get(key)
    if (
        cached is None
        or cached.tokenizer is not tokenizer
        or cached.template != tokenizer.chat_template
    ):
        cached = ChatTokenizer(tokenizer)
        _CACHE.clear()  # one tokenizer at a time is the norm; do not pin old ones in memory
        _CACHE[key] = cached
    return cached


def check_train_on(train_on: str) -> None:
    if train_on not in TRAIN_ON:
        raise ConfigError(f"train_on must be one of {', '.join(TRAIN_ON)}, got {train_on!r}")


def tokenize_many(
    conversations: Sequence[Conversation],
    tokenizer: Any,
    *,
    train_on: str = "assistant",
    max_seq_len: int | None = None,
    truncate: bool = False,
) -> list[TokenizedExample | RowError]:
    """Tokenize a batch of conversations in one tokenizer call; a row's problem is returned in
    its slot as a `RowError` (the validator reports it) rather than raised."""
    check_train_on(train_on)
    ct = chat_tokenizer(tokenizer)
    plans: list[_Plan | RowError] = []
    texts: list[str] = []
    for conv in conversations:
        try:
            if max_seq_len is not None:
                conv = ct.bound_length(conv, max_seq_len, truncate)
            plan = ct.plan(conv, train_on)
        except RowError as exc:
            plans.append(exc)
            continue
        plans.append(plan)
        texts.extend(t for t, _ in plan.segments)
        texts.extend(t for _, t in plan.checks)
    encoded = ct.encode_many(texts)
    out: list[TokenizedExample | RowError] = []
    pos = 0
    for conv, planned in zip(conversations, plans, strict=True):
        if isinstance(planned, RowError):
            out.append(planned)
            continue
        plan = planned
        n_seg, n_chk = len(plan.segments), len(plan.checks)
        seg_ids = encoded[pos : pos + n_seg]
        check_ids = encoded[pos + n_seg : pos + n_seg + n_chk]
        pos += n_seg + n_chk
        ids, labels, first, merged = ct.assemble(plan, seg_ids, check_ids)
        try:
            ex = _limit(ids, labels, first, conv.source, max_seq_len, truncate)
            ex.retokenized = merged
            out.append(ex)
        except RowError as exc:
            out.append(exc)
    return out


def _limit(
    ids: list[int],
    labels: list[int],
    first: int,
    source: Source | None,
    max_seq_len: int | None,
    truncate: bool,
) -> TokenizedExample:
    truncated = False
    if max_seq_len is not None and len(ids) > max_seq_len:
        if not truncate:
            raise RowError(
                "too_long",
                f"example is {len(ids)} tokens, longer than max_seq_len {max_seq_len}; rejected",
                source,
                "messages",
                hint="raise --max-seq-len, shorten the example, or pass --truncate",
            )
        ids, labels, truncated = ids[:max_seq_len], labels[:max_seq_len], True
        if labels.count(IGNORE_INDEX) == len(labels):
            raise RowError(
                "too_long",
                f"example is longer than max_seq_len {max_seq_len} and truncating "
                "it would leave no trained tokens; rejected",
                source,
                "messages",
                hint="raise --max-seq-len or shorten the prompt",
            )
    if labels.count(IGNORE_INDEX) == len(labels):
        raise RowError("no_assistant", "no token carries loss", source, "messages")
    return TokenizedExample(ids, labels, source, truncated, min(first, len(ids)))


def tokenize_conversation(
    conv: Conversation,
    tokenizer: Any,
    *,
    train_on: str = "assistant",
    max_seq_len: int | None = None,
    truncate: bool = False,
) -> TokenizedExample:
    """Token ids and loss labels for one conversation (raises `DataError` naming its line).

    Over-long conversations raise unless `truncate=True`, which keeps the first `max_seq_len`
    tokens (and still raises if no trained token survives).
    """
    result = tokenize_many(
        [conv], tokenizer, train_on=train_on, max_seq_len=max_seq_len, truncate=truncate
    )[0]
    if isinstance(result, RowError):
        raise result
    return result


def tokenize_preference(
    pair: PreferencePair,
    tokenizer: Any,
    *,
    max_seq_len: int | None = None,
    truncate: bool = False,
) -> TokenizedPair:
    """Tokenize a preference pair as prompt + chosen and prompt + rejected (answer-only loss;
    raises the row's `RowError`)."""
    result = tokenize_preferences([pair], tokenizer, max_seq_len=max_seq_len, truncate=truncate)[0]
    if isinstance(result, RowError):
        raise result
    return result


def tokenize_preferences(
    pairs: Sequence[PreferencePair],
    tokenizer: Any,
    *,
    max_seq_len: int | None = None,
    truncate: bool = False,
) -> list[TokenizedPair | RowError]:
    """Tokenize preference pairs in one batch: each answer is the assistant turn after the
    prompt, rendered by the same template and labelled by the same rule as SFT with
    `train_on="last"` (loss on that answer and its end-of-turn token only, never on an
    assistant turn inside the prompt). A row's problem comes back in its slot."""
    convs = [
        Conversation((*pair.prompt, Message("assistant", answer)), pair.source)
        for pair in pairs
        for answer in (pair.chosen, pair.rejected)
    ]
    done = tokenize_many(
        convs, tokenizer, train_on="last", max_seq_len=max_seq_len, truncate=truncate
    )
    out: list[TokenizedPair | RowError] = []
    for i, pair in enumerate(pairs):
        chosen, rejected = done[2 * i], done[2 * i + 1]
        if isinstance(chosen, RowError):
            out.append(_answer_error(chosen, "chosen"))
        elif isinstance(rejected, RowError):
            out.append(_answer_error(rejected, "rejected"))
        else:
            out.append(TokenizedPair(chosen, rejected, chosen.prompt_tokens, pair.source))
    return out


def _answer_error(exc: RowError, which: str) -> RowError:
    """A tokenizing error of one answer of a pair, saying which answer (not "messages")."""
    if exc.field != "messages":
        return exc
    return RowError(exc.code or "invalid", exc.reason, exc.source, which, exc.hint, path=exc.path)


# What stands for the answer while a prompt is tokenized (see `tokenize_prompts`).
_PLACEHOLDER = "x"


def tokenize_prompts(
    prompts: Sequence[Prompt], tokenizer: Any, *, max_seq_len: int | None = None
) -> list[TokenizedExample | RowError]:
    """The ids a model is fed before it answers each prompt (chat template with the generation
    prompt), as a `TokenizedExample` whose labels are all ignored; a row's problem comes back
    in its slot. Each prompt is tokenized as the prompt part of prompt + a placeholder answer
    with `train_on="last"`: exactly the ids inference feeds for that history (the rule the
    SFT and DPO rows follow), with the same special-token and length checks. A prompt is never
    truncated (its end is the question); one longer than `max_seq_len` is rejected."""
    convs = [
        Conversation((*p.messages, Message("assistant", _PLACEHOLDER)), p.source) for p in prompts
    ]
    done = tokenize_many(convs, tokenizer, train_on="last", max_seq_len=max_seq_len, truncate=False)
    out: list[TokenizedExample | RowError] = []
    for p, res in zip(prompts, done, strict=True):
        if isinstance(res, RowError):
            out.append(res)
            continue
        ids = res.input_ids[: res.prompt_tokens]
        out.append(
            TokenizedExample(
                ids, [IGNORE_INDEX] * len(ids), p.source, False, len(ids), res.retokenized
            )
        )
    return out
