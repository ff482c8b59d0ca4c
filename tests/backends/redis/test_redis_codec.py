"""The stored message entry: what encode_message writes, decode_message reads (no server)."""

from __future__ import annotations

import pytest

from threadkeep._rules.rows import MessageRow
from threadkeep.backends.redis._codec import decode_message, encode_message


@pytest.mark.parametrize("content", ["hi", "", "two\nlines", "\n\nlead and trail\n"])
@pytest.mark.parametrize("key", [None, "k-1"])
@pytest.mark.parametrize("payload", [None, '{"a":1}'])
def test_an_entry_reads_back_as_written(content: str, key: str | None, payload: str | None) -> None:
    body = encode_message("tool", content, 1_796_000_000_000_123, '{"m":"x"}', key, payload, 3)
    assert decode_message("c-1", f"42 {body}") == MessageRow(
        "c-1", 42, "tool", content, 1_796_000_000_000_123, '{"m":"x"}', key, payload, 3
    )


@pytest.mark.parametrize("content", ["hi", "", "two\nlines", "a\nb\nc\nd"])
def test_an_entry_written_before_payloads_reads_without_payload_and_link(content: str) -> None:
    entry = f"7 user\n1796000000000000\n+k\n{{}}\n{content}"  # no link, no payload line
    assert decode_message("c-1", entry) == MessageRow(
        "c-1", 7, "user", content, 1_796_000_000_000_000, "{}", "k", None, 0
    )
    keyless = f"8 assistant\n1796000000000000\n\n{{}}\n{content}"
    assert decode_message("c-1", keyless).idempotency_key is None
    assert decode_message("c-1", keyless).content == content


@pytest.mark.parametrize("optional", [False, True])
def test_a_conversation_row_reads_back_as_written(optional: bool) -> None:
    from threadkeep._rules.retention import RetentionUs
    from threadkeep._rules.rows import ConversationRow
    from threadkeep.backends.redis._codec import decode_conversation, encode_conversation

    some = (lambda value: value) if optional else (lambda value: None)
    row = ConversationRow(
        "01kdw", "t", "c-1", some("agent"), some("web"), "active", some("Q1"), '{"a":1}',
        1, 2, some(3), 4, 5, 6, 7, RetentionUs(some(8), 9, 10, some(11)),
    )  # fmt: skip
    flat = encode_conversation(row)
    assert len(flat) == 2 * (13 + 6 * optional)  # a None field is left out
    assert decode_conversation(flat) == row
