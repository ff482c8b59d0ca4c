"""``make_bot()``: the one place a bot setting (``THREADKEEP_BOT``, ``--bot``) becomes a bot."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final, cast

from threadkeep import InvalidInput

if TYPE_CHECKING:
    from threadkeep.bot._turn import Bot

__all__ = ["BOT_NAMES", "make_bot"]

#: The bots known by name; anything else must be an import string ``package.module:attribute``.
BOT_NAMES: Final = ("seller", "echo")


def _is_bot(value: object) -> bool:
    return callable(getattr(value, "respond", None))


def make_bot(spec: str) -> Bot:
    """Return the bot ``spec`` names.

    Args:
        spec: ``seller`` (the demo bot; it rewords with Claude when ``ANTHROPIC_API_KEY`` is
            set), ``echo``, or ``package.module:attribute`` where the attribute is a bot (an
            object with ``async respond(store, conversation, message)``) or a function or class
            that returns one when called without arguments.

    Raises:
        InvalidInput: an unknown name, or an import string that does not give a bot (its
            module or factory failing included).
    """
    if spec == "echo":
        from threadkeep.bot import EchoBot

        return EchoBot()
    if spec == "seller":
        from threadkeep.bot.seller import SellerBot

        return SellerBot.from_env()
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise InvalidInput(
            f"THREADKEEP_BOT {spec!r} is not a bot: use seller, echo or package.module:attribute",
            field="THREADKEEP_BOT",
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may fail in any way; one line says how
        raise InvalidInput(
            f"THREADKEEP_BOT {spec!r}: cannot import {module_name} ({exc})", field="THREADKEEP_BOT"
        ) from None
    value: object = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise InvalidInput(
                f"THREADKEEP_BOT {spec!r}: {module_name} has no attribute {attribute}",
                field="THREADKEEP_BOT",
            )
        value = getattr(value, part)
    if isinstance(value, type) or (not _is_bot(value) and callable(value)):
        try:
            value = value()
        except Exception as exc:  # the user's factory may fail in any way; one line says how
            raise InvalidInput(
                f"THREADKEEP_BOT {spec!r}: calling {attribute}() failed "
                f"({type(exc).__name__}: {exc})",
                field="THREADKEEP_BOT",
            ) from None
    if not _is_bot(value):
        raise InvalidInput(
            f"THREADKEEP_BOT {spec!r} is not a bot: it has no respond(store, conversation, "
            "message) method",
            field="THREADKEEP_BOT",
        )
    return cast("Bot", value)  # checked above: it has respond()
