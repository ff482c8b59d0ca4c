"""``make_bot()``: a bot setting becomes a bot, or one line naming THREADKEEP_BOT and the cause."""

from __future__ import annotations

import pytest

from threadkeep import InvalidInput
from threadkeep.bot import EchoBot, make_bot


def test_an_import_string_gives_the_bot_its_factory_returns():
    assert isinstance(make_bot("threadkeep.bot:EchoBot"), EchoBot)


@pytest.mark.parametrize(
    ("spec", "cause"),
    [
        ("nope", "use seller, echo or package.module:attribute"),
        ("no_such_module_here:bot", "cannot import no_such_module_here"),
        ("json:nothing", "json has no attribute nothing"),
        ("json:JSONDecodeError", "JSONDecodeError() failed (TypeError: "),  # a class that raises
        ("json:dumps", "dumps() failed (TypeError: dumps() missing 1 required positional"),
        ("json:decoder", "no respond(store, conversation, message) method"),
    ],
)
def test_a_bad_bot_is_one_line_naming_the_setting_and_the_cause(spec, cause):
    with pytest.raises(InvalidInput) as caught:
        make_bot(spec)
    message = str(caught.value)
    assert message.startswith(f"THREADKEEP_BOT {spec!r}")
    assert cause in message and "\n" not in message
    assert caught.value.field == "THREADKEEP_BOT"
