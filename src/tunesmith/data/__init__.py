"""Data preparation: readers, formats, validation, tokenization with loss masks, packing.

Data flows one way: reader (rows with line numbers) → formats (canonical `Conversation` /
`PreferencePair`) → validate (report) → tokenize (chat template + loss mask) → packing.
"""

from tunesmith.data.mixing import MixSource
from tunesmith.data.packing import PackedRow, pack, packing_efficiency
from tunesmith.data.prepare import (
    PreparedData,
    PreparedPairs,
    prepare_preference,
    prepare_sft,
    read_records,
)
from tunesmith.data.records import Conversation, Message, PreferencePair, Record, Source
from tunesmith.data.tokenize import (
    IGNORE_INDEX,
    TokenizedExample,
    TokenizedPair,
    tokenize_conversation,
    tokenize_many,
    tokenize_preference,
    tokenize_preferences,
)
from tunesmith.data.validate import Issue, ValidationReport

__all__ = [
    "IGNORE_INDEX",
    "Conversation",
    "Issue",
    "Message",
    "MixSource",
    "PackedRow",
    "PreferencePair",
    "PreparedData",
    "PreparedPairs",
    "Record",
    "Source",
    "TokenizedExample",
    "TokenizedPair",
    "ValidationReport",
    "pack",
    "packing_efficiency",
    "prepare_preference",
    "prepare_sft",
    "read_records",
    "tokenize_conversation",
    "tokenize_many",
    "tokenize_preference",
    "tokenize_preferences",
]
