"""Parsing of component parameters that carry a JSON object as a string (KFP parameters are primitives)."""

from __future__ import annotations

import json
from typing import Any

from kfp_tabular.errors import ConfigError


def parse_json_object(text: str, name: str, example: str) -> dict[str, Any]:
    """Parse ``text`` as a JSON object; an empty or blank string gives ``{}``.

    Args:
        text: The parameter value.
        name: Parameter name, used in error messages.
        example: A valid value shown in error messages, e.g. ``{"accuracy": 0.9}``.

    Raises:
        ConfigError: the text is not valid JSON (the message gives line, column and character offset), or
            it is valid JSON but not an object.
    """
    if not text or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{name} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos}). "
            f"Pass a JSON object such as {example}, with double-quoted keys."
        ) from exc
    if not isinstance(value, dict):
        raise ConfigError(
            f"{name} must be a JSON object such as {example}, got {type(value).__name__}: {text!r}."
        )
    return value
