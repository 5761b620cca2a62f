"""Row builders shared by the data tests (a plain module: importable from any test file)."""

from __future__ import annotations

from typing import Any

QUESTIONS = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("What is the capital of Germany?", "Berlin is the capital of Germany."),
    ("Reset my password please.", "I have sent a password reset email to you."),
    ("My delivery is late.", "Sorry about that, the delivery will arrive soon."),
    ("Classify: the invoice is broken", "The category is invoice."),
    ("Summary of the call please", "The customer wants a refund for a broken phone."),
    ("Translate hello to french", "Bonjour."),
    ("Is this email urgent?", "Yes, the email is urgent."),
    ("What is the order number?", "The order number is in your account."),
    ("Thanks for the help", "You are welcome, have a good day."),
    ("Can you help with my account?", "Yes, what do you need for your account?"),
    ("Write a json with name and phone", '{"name": "x", "phone": "y"}'),
]


def chat_row(i: int, system: str | None = None) -> dict[str, Any]:
    q, a = QUESTIONS[i % len(QUESTIONS)]
    suffix = "" if i < len(QUESTIONS) else f" ({i})"
    messages = [{"role": "user", "content": q + suffix}, {"role": "assistant", "content": a}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    return {"messages": messages}


def chat_rows(n: int = 12) -> list[dict[str, Any]]:
    return [chat_row(i) for i in range(n)]
