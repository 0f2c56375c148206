"""Structured output: a reply held to JSON (any object, or a JSON schema) by constrained
decoding, for the API's response_format json_object / json_schema.

lm-format-enforcer's character-level JSON-schema parser and token enforcer do the work; at
each step they give the tokens that keep the text a valid prefix, and the engine
(model/generation.py) picks only among those. Its own transformers integration does not
import with transformers 5 (it imports the removed module transformers.tokenization_utils),
so the table of token texts it needs is built here the way that integration builds it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

from tunesmith.errors import TunesmithError

Constraint = Callable[[list[int]], Sequence[int]]
"""(prompt and generated token ids) -> the token ids allowed next."""

MAX_SCHEMA_CHARS = 32_768
MAX_SCHEMA_DEPTH = 24
"""A schema is the caller's data: bounded in size and nesting before a parser sees it."""

_TABLES: dict[int, Any] = {}
_TABLES_LOCK = threading.Lock()


class SchemaError(TunesmithError):
    """A response_format schema this server cannot hold a reply to."""


def available() -> bool:
    try:
        import lmformatenforcer  # noqa: F401
    except ImportError:
        return False
    return True


def check_schema(schema: Any) -> dict[str, Any]:
    """The schema, if it is one the parser can hold a reply to; else SchemaError saying why."""
    if not isinstance(schema, dict):
        raise SchemaError("json_schema.schema must be a JSON object (a JSON Schema)")
    if len(json.dumps(schema)) > MAX_SCHEMA_CHARS:
        raise SchemaError(f"json_schema.schema is longer than {MAX_SCHEMA_CHARS} characters")
    _check_nesting(schema, 0)
    from lmformatenforcer import JsonSchemaParser

    try:
        JsonSchemaParser(schema)
    except Exception as exc:  # the parser's own words for what it cannot handle
        raise SchemaError(f"json_schema.schema cannot be enforced: {exc}") from None
    return schema


def _check_nesting(value: Any, depth: int) -> None:
    if depth > MAX_SCHEMA_DEPTH:
        raise SchemaError(f"json_schema.schema is nested more than {MAX_SCHEMA_DEPTH} levels deep")
    if isinstance(value, dict):
        ref = value.get("$ref")
        if ref is not None and not (isinstance(ref, str) and ref.startswith("#")):
            raise SchemaError("json_schema.schema may only $ref its own definitions ('#/...')")
        for item in value.values():
            _check_nesting(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_nesting(item, depth + 1)


def json_constraint(tokenizer: Any, schema: dict[str, Any] | None, stop_ids: Sequence[int]) -> Constraint:
    """A constraint holding a reply to JSON: an object when schema is None (json_object), else
    the schema. The reply may end (a stop token) only once the JSON is whole."""
    from lmformatenforcer import JsonSchemaParser, TokenEnforcer

    parser = JsonSchemaParser(schema if schema is not None else {"type": "object"})
    enforcer = TokenEnforcer(_table(tokenizer, sorted(stop_ids)), parser)

    def allowed(token_ids: list[int]) -> Sequence[int]:
        result = enforcer.get_allowed_tokens(token_ids)
        return list(getattr(result, "allowed_tokens", result))

    return allowed


def _table(tokenizer: Any, stop_ids: list[int]) -> Any:
    """The enforcer's view of the vocabulary, once per tokenizer: each regular token's text and
    whether it starts a word (decoded after a fixed token, as lm-format-enforcer does)."""
    from lmformatenforcer import TokenEnforcerTokenizerData

    key = id(tokenizer)
    with _TABLES_LOCK:
        if key not in _TABLES:
            special = set(tokenizer.all_special_ids)
            zero = tokenizer.encode("0", add_special_tokens=False)[-1]
            regular = []
            for token in range(len(tokenizer)):
                if token in special:
                    continue
                after_zero = tokenizer.decode([zero, token])[1:]
                alone = tokenizer.decode([token])
                regular.append((token, after_zero, len(after_zero) > len(alone)))

            def decode(ids: list[int]) -> str:
                return str(tokenizer.decode(ids)).rstrip("\ufffd")

            _TABLES[key] = TokenEnforcerTokenizerData(regular, decode, stop_ids, False, len(tokenizer))
        return _TABLES[key]
