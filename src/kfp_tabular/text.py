"""Composing messages from other messages without doubling their punctuation."""

from __future__ import annotations


def clause(text: object) -> str:
    """``text`` (a message, an exception) without its final period, ready for more words or a period of its own.

    ``f"because {clause(exc)}. Retry"`` reads "because x failed. Retry" whether or not ``exc`` ends in a period.
    """
    return str(text).rstrip().removesuffix(".").rstrip()


def sentence(text: object) -> str:
    """``text`` ending in exactly one period."""
    return clause(text) + "."
