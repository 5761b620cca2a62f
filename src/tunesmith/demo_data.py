"""Generate the `tunesmith demo` task: customer messages -> strict JSON with fixed keys.

    python examples/demo/make_data.py            # rewrites examples/demo/{train,heldout}.jsonl
    python -m tunesmith.demo_data --out DIR      # the same files anywhere

The generator lives in the package so that a pip-installed tunesmith can run `tunesmith demo`
without a source checkout: `ensure_demo_data` writes the files (byte for byte the ones in
examples/demo) into the tunesmith home the first time they are needed.

Every message is assembled from independent parts (greeting, issue, order reference, urgency
cue, mood cue, closing) drawn with a fixed seed, so the same command always writes the same
files. The labels follow from the text by rules a reader can check:

- category: what the issue is about (6 classes, many phrasings each);
- priority: `high` when the writer signals urgency, `low` when they signal there is no rush,
  `medium` otherwise;
- sentiment: `negative` for complaints/anger, `positive` for praise/thanks, `neutral` otherwise;
- order_id: the order reference if the message has one (written in several styles), else null.

The held-out split is generated from the same parts but (a) no held-out message appears in the
training file and (b) a share of the held-out products and names never occur in training, and
every order id is freshly random, so a model that only memorised the training lines cannot pass.
"""

from __future__ import annotations

import argparse
import json
import random
from contextlib import suppress
from pathlib import Path

from tunesmith.io import atomic_dir

SEED = 20261123
SYSTEM_PROMPT = "Reply with JSON only: category, priority, sentiment, order_id."

# Products and other fillers; the last few of each list are reserved for held-out messages.
PRODUCTS = [
    "blender",
    "desk lamp",
    "running shoes",
    "coffee grinder",
    "phone case",
    "backpack",
    "wireless earbuds",
    "yoga mat",
    "kettle",
    "office chair",
    "rain jacket",
    "water bottle",
    "keyboard",
    "air fryer",
    "toaster",
    "monitor stand",
    "hiking boots",
    "bed sheets",
    "electric toothbrush",
    "camping tent",
    "smart watch",
    "vacuum cleaner",
    "winter coat",
    "gaming mouse",
    "bookshelf",
    "frying pan",
]
HELDOUT_PRODUCTS = [
    "standing desk",
    "espresso machine",
    "sleeping bag",
    "ceiling fan",
    "baby stroller",
    "label printer",
]
AMOUNTS = [
    "$12.99",
    "$45",
    "$89.50",
    "$120",
    "$19.99",
    "$250",
    "$7.49",
    "$64",
    "$310",
    "€39",
    "£22.50",
    "$5",
]
NAMES = [
    "Maria",
    "Tom",
    "Aisha",
    "Kenji",
    "Lena",
    "Carlos",
    "Priya",
    "Sam",
    "Olga",
    "Ben",
    "Fatima",
    "Jonas",
    "Chloe",
    "Ravi",
]
HELDOUT_NAMES = ["Ingrid", "Mateo", "Yusuf", "Hana"]
DAYS = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "the weekend",
    "last week",
    "two weeks ago",
    "yesterday",
    "three days ago",
]

ISSUES: dict[str, list[str]] = {
    "billing": [
        "I was charged twice for my {product}",
        "my card was billed {amount} but the total at checkout said less",
        "there is a charge of {amount} on my statement I do not recognise",
        "the invoice for my {product} shows the wrong VAT number",
        "you took {amount} from my account after I cancelled the subscription",
        "the discount code was not applied and I paid {amount} for the {product}",
        "I need a corrected invoice for the {product} I bought {day}",
        "why was I charged a {amount} fee for paying by card",
        "my payment failed but the money still left my bank account",
        "the price of the {product} went up between my cart and the payment page",
    ],
    "delivery": [
        "my {product} has not arrived yet",
        "the tracking page for my {product} has not moved since {day}",
        "the courier says the parcel was delivered but nothing came",
        "my {product} was left outside in the rain",
        "the package with my {product} went to my old address",
        "the delivery date keeps getting pushed back",
        "can you tell me when my {product} will be shipped",
        "the driver never rang the bell and took the {product} back to the depot",
        "only half of my order arrived, the {product} is missing",
        "the box arrived crushed and the {product} inside is dented",
    ],
    "refund": [
        "I returned the {product} {day} and still have no refund",
        "I want my money back for the {product}",
        "how long does a refund for {amount} usually take",
        "you refunded {amount} but I paid more than that",
        "please cancel the order for the {product} and refund me",
        "the {product} does not fit, I would like to send it back for a refund",
        "I was promised a refund for the late {product} but it never came",
        "can I get store credit instead of a refund for the {product}",
        "the return label for the {product} does not work",
        "the refund went to a card I no longer have",
    ],
    "technical": [
        "the app crashes every time I open my orders",
        "I cannot check out, the page shows error 500",
        "the website will not load on my phone",
        "the {product} will not pair with the app",
        "the firmware update bricked my {product}",
        "the search bar returns nothing for {product}",
        "I keep getting logged out of the app every few minutes",
        "the checkout button does nothing when I click it",
        "the {product} manual link on your site is broken",
        "your app shows my cart as empty even though I added a {product}",
    ],
    "account": [
        "I cannot log in to my account",
        "the password reset email never arrives",
        "please change the email address on my account",
        "I would like to delete my account and all my data",
        "someone else seems to have logged in to my account",
        "how do I turn on two-factor authentication",
        "my account got locked after too many attempts",
        "I want to merge my two accounts into one",
        "please update the name on my account to {name}",
        "I cannot find where to change my saved address",
    ],
    "product": [
        "is the {product} available in blue",
        "does the {product} come with a warranty",
        "what size {product} would you recommend for a small flat",
        "is the {product} dishwasher safe",
        "will the {product} be back in stock soon",
        "how loud is the {product} when it runs",
        "can the {product} be used outdoors",
        "what is the difference between the two {product} models",
        "does the {product} work with European plugs",
        "how much does the {product} weigh",
    ],
}

GREETINGS = [
    "",
    "Hi,",
    "Hello,",
    "Hey there,",
    "Good morning,",
    "Dear support,",
    "Hi team,",
    "Hello, this is {name}.",
    "Hi, {name} here.",
    "To whom it may concern,",
]
CLOSINGS = ["", "", "Regards, {name}", "- {name}", "Best, {name}", "Cheers", "Sent from my phone"]
ORDER_STYLES = [
    "order #{oid}",
    "order {oid}",
    "order number {oid}",
    "my order ({oid})",
    "ref {oid}",
    "order no. {oid}",
]
HIGH_CUES = [
    "This is urgent.",
    "Please fix this today!",
    "I need this sorted immediately.",
    "URGENT, please respond asap.",
    "I need an answer right now.",
    "This cannot wait any longer.",
    "Please treat this as an emergency.",
]
LOW_CUES = [
    "No rush at all.",
    "Whenever you have a moment.",
    "Not urgent, just curious.",
    "Take your time.",
    "It can wait until next week.",
    "Low priority, just letting you know.",
]
NEGATIVE_CUES = [
    "This is unacceptable.",
    "I am really fed up with this.",
    "Worst service I have had.",
    "I am very disappointed.",
    "This is ridiculous.",
    "Honestly, I am furious.",
    "Terrible experience so far.",
]
POSITIVE_CUES = [
    "I love your shop, by the way!",
    "Thanks so much for your help!",
    "You have been great so far.",
    "Really happy with you otherwise.",
    "Your team is always wonderful.",
    "Thank you, you are the best!",
]
ID_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def order_id(rng: random.Random) -> str:
    """A fresh 6-character id (letter first). Ids are random, so held-out ids are new ones of
    the same shape: the model must copy them, it cannot have memorised them."""
    first = rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ")
    return first + "".join(rng.choice(ID_CHARS) for _ in range(5))


def make_example(rng: random.Random, heldout: bool) -> tuple[str, dict]:
    """One customer message and its label."""
    category = rng.choice(sorted(ISSUES))
    priority = rng.choices(["low", "medium", "high"], weights=[1, 1, 1])[0]
    sentiment = rng.choices(["positive", "neutral", "negative"], weights=[1, 1, 1])[0]
    products = PRODUCTS + (HELDOUT_PRODUCTS if heldout else [])
    names = NAMES + (HELDOUT_NAMES if heldout else [])
    fill = {
        "product": rng.choice(products),
        "amount": rng.choice(AMOUNTS),
        "name": rng.choice(names),
        "day": rng.choice(DAYS),
    }
    issue = rng.choice(ISSUES[category]).format(**fill)
    has_order = category != "account" and rng.random() < 0.6
    oid = order_id(rng) if has_order else None
    if oid:
        # The id goes in as a placeholder so that lower-casing the message keeps it verbatim.
        ref = rng.choice(ORDER_STYLES).format(oid="{oid}")
        issue = rng.choice([f"{issue} ({ref})", f"About {ref}: {issue}", f"{issue}, {ref}"])
    issue = issue[0].upper() + issue[1:]
    if not issue.endswith(("?", ".", "!", ")")):
        issue += "?" if category == "product" and rng.random() < 0.7 else "."
    parts = [rng.choice(GREETINGS).format(**fill), issue]
    cues = []
    if priority == "high":
        cues.append(rng.choice(HIGH_CUES))
    elif priority == "low":
        cues.append(rng.choice(LOW_CUES))
    if sentiment == "negative":
        cues.append(rng.choice(NEGATIVE_CUES))
    elif sentiment == "positive":
        cues.append(rng.choice(POSITIVE_CUES))
    rng.shuffle(cues)
    parts += cues
    parts.append(rng.choice(CLOSINGS).format(**fill))
    text = " ".join(p for p in parts if p)
    if rng.random() < 0.15:
        text = text.lower()
    if oid:
        text = text.replace("{oid}", oid)
    label = {"category": category, "priority": priority, "sentiment": sentiment, "order_id": oid}
    return text, label


def record(text: str, label: dict) -> dict:
    answer = json.dumps(label, separators=(", ", ": "))
    return {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": text},
            {"role": "assistant", "content": answer},
        ]
    }


def generate(n_train: int, n_heldout: int, seed: int = SEED) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    seen: set[str] = set()

    def draw(n: int, heldout: bool) -> list[dict]:
        rows: list[dict] = []
        while len(rows) < n:
            text, label = make_example(rng, heldout=heldout)
            if text not in seen:  # no message twice, and none shared by the two splits
                seen.add(text)
                rows.append(record(text, label))
        return rows

    train = draw(n_train, heldout=False)
    return train, draw(n_heldout, heldout=True)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


LONG_PROMPT = Path(__file__).resolve().parent / "resources" / "demo" / "long_prompt.txt"
N_TRAIN, N_HELDOUT = 400, 100


def ensure_demo_data(out: Path) -> Path:
    """`out` holding the demo's train.jsonl and heldout.jsonl, written once (atomically, through
    `tunesmith.io.atomic_dir`: a temporary directory renamed into place, so an interrupted write
    leaves nothing half-done). Another process writing the same data at the same time is fine:
    whichever finishes second finds the folder there and keeps it."""
    out = Path(out)

    def present() -> bool:
        return (out / "train.jsonl").is_file() and (out / "heldout.jsonl").is_file()

    if present():
        return out
    if out.is_dir():
        # an empty leftover folder is taken over (rmdir removes only an empty one); anything
        # else in the way fails below
        with suppress(OSError):
            out.rmdir()
    try:
        with atomic_dir(out) as tmp:
            train, heldout = generate(N_TRAIN, N_HELDOUT)
            write_jsonl(tmp / "train.jsonl", train)
            write_jsonl(tmp / "heldout.jsonl", heldout)
    except OSError:  # FileExistsError or a rename onto a full folder: someone got there first
        if not present():
            raise
    return out


# -- preference pairs on the same task (DPO / ORPO: examples/dpo/) ----------------------------
#
# The chosen answer is the right JSON; the rejected one is a near miss of the kinds a model
# really makes on this task: one wrong value (priority, sentiment or category), the right
# values wrapped in prose or a markdown fence, or the order id dropped or made up. Written in
# OpenAI's DPO format (input / preferred_output / non_preferred_output).
PAIR_SEED = SEED + 1
N_PAIRS, N_HELDOUT_PAIRS = 300, 60
NEAR_MISSES = ("priority", "sentiment", "category", "prose", "fenced", "order_id")


def near_miss(rng: random.Random, label: dict) -> str:
    """A plausible wrong answer for `label` (one of NEAR_MISSES, drawn with `rng`)."""
    kind = rng.choice(NEAR_MISSES)
    bad = dict(label)
    choices = {
        "priority": ["low", "medium", "high"],
        "sentiment": ["positive", "neutral", "negative"],
        "category": sorted(ISSUES),
    }
    if kind in choices:
        bad[kind] = rng.choice([v for v in choices[kind] if v != label[kind]])
    elif kind == "order_id":
        bad["order_id"] = None if label["order_id"] else order_id(rng)
    text = json.dumps(bad, separators=(", ", ": "))
    if kind == "prose":
        return f"Sure! Here is the classification: {text}"
    if kind == "fenced":
        return f"```json\n{text}\n```"
    return text


def pair_record(text: str, label: dict, rng: random.Random) -> dict:
    chat = record(text, label)["messages"]
    return {
        "input": {"messages": chat[:2]},
        "preferred_output": [chat[2]],
        "non_preferred_output": [{"role": "assistant", "content": near_miss(rng, label)}],
    }


def generate_pairs(
    n_train: int = N_PAIRS, n_heldout: int = N_HELDOUT_PAIRS, seed: int = PAIR_SEED
) -> tuple[list[dict], list[dict]]:
    """Train and held-out preference pairs (held-out messages new, as in `generate`)."""
    rng = random.Random(seed)
    seen: set[str] = set()

    def draw(n: int, heldout: bool) -> list[dict]:
        rows: list[dict] = []
        while len(rows) < n:
            text, label = make_example(rng, heldout=heldout)
            if text not in seen:
                seen.add(text)
                rows.append(pair_record(text, label, rng))
        return rows

    train = draw(n_train, heldout=False)
    return train, draw(n_heldout, heldout=True)


def pairs_main(default_out: Path) -> None:
    parser = argparse.ArgumentParser(description="write the DPO demo pairs")
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--train", type=int, default=N_PAIRS)
    parser.add_argument("--heldout", type=int, default=N_HELDOUT_PAIRS)
    parser.add_argument("--seed", type=int, default=PAIR_SEED)
    args = parser.parse_args()
    train, heldout = generate_pairs(args.train, args.heldout, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "train.jsonl", train)
    write_jsonl(args.out / "heldout.jsonl", heldout)
    print(f"wrote {len(train)} training and {len(heldout)} held-out pairs to {args.out}")


def main(default_out: Path | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_out, required=default_out is None)
    parser.add_argument("--train", type=int, default=N_TRAIN)
    parser.add_argument("--heldout", type=int, default=N_HELDOUT)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    train, heldout = generate(args.train, args.heldout, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "train.jsonl", train)
    write_jsonl(args.out / "heldout.jsonl", heldout)
    print(f"wrote {len(train)} training and {len(heldout)} held-out examples to {args.out}")


if __name__ == "__main__":
    main()
