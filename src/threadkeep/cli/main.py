"""The ``threadkeep`` command: list, show, export, import, sweep, serve and chat.

Every expected error (a ``ThreadkeepError``) is printed as one red line on stderr and exits 1;
bad usage exits 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Column, Table

import threadkeep
from threadkeep import (
    AsyncStore,
    Conversation,
    ConversationClosed,
    IllegalTransition,
    Message,
    Status,
    Store,
    ThreadkeepError,
)
from threadkeep.bot import Bot, EchoBot

DEFAULT_STORE = "sqlite:///./threadkeep.db"
IMPORTED_FROM = "imported_from"

app = typer.Typer(
    help="Keep the conversations of chat agents.", no_args_is_help=True, add_completion=False
)
out = Console()
err = Console(stderr=True)

StoreOpt = Annotated[
    str, typer.Option("--store", envvar="THREADKEEP_STORE", help="Store URL.", show_default=True)
]
TenantOpt = Annotated[str, typer.Option("--tenant", help="Tenant.")]


def make_cli_bot(name: str = "seller") -> Bot:
    """Return the bot that ``threadkeep chat`` talks to: ``seller`` (default) or ``echo``.

    The seller bot rewords its replies with Claude when ``ANTHROPIC_API_KEY`` is set.

    Raises:
        ValueError: an unknown bot name.
    """
    if name == "echo":
        return EchoBot()
    if name == "seller":
        from threadkeep.bot.seller import SellerBot

        return SellerBot.from_env()
    raise ValueError(f"unknown bot {name!r}; use seller or echo")


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(1)


@contextmanager
def _opened(url: str) -> Iterator[Store]:
    try:
        with threadkeep.open(url) as store:
            yield store
    except ThreadkeepError as e:
        raise _fail(f"{type(e).__name__}: {e}") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _conv_dict(conv: Conversation) -> dict[str, Any]:
    return dict(_jsonable(asdict(conv)))


def _write(text: str) -> None:
    sys.stdout.write(text + "\n")


@app.command("ls")
def ls_cmd(
    store: StoreOpt = DEFAULT_STORE,
    tenant: TenantOpt = "default",
    status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
    stage: Annotated[str | None, typer.Option(help="Only this stage.")] = None,
    contact: Annotated[str | None, typer.Option(help="Only this contact.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent.")] = None,
    limit: Annotated[int, typer.Option(help="Page size.")] = 50,
    all_: Annotated[bool, typer.Option("--all", help="Follow the cursor to the end.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List live conversations, newest activity first."""
    with _opened(store) as s:
        convs: list[Conversation] = []
        cursor: str | None = None
        while True:
            page = s.list(
                tenant=tenant,
                status=status,
                stage=stage,
                contact_id=contact,
                agent_id=agent,
                limit=limit,
                cursor=cursor,
            )
            convs.extend(page.items)
            cursor = page.next_cursor
            if not all_ or cursor is None:
                break
    if as_json:
        for c in convs:
            _write(json.dumps(_conv_dict(c)))
        return
    table = Table("contact", "status", "stage", "messages", "last activity")
    table.columns.insert(0, Column("id", no_wrap=True, min_width=26))
    for c in convs:
        table.add_row(
            c.id,
            c.contact_id,
            c.status,
            c.stage or "",
            str(c.message_count),
            c.last_activity_at.isoformat(timespec="seconds"),
        )
    out.print(table)
    if cursor is not None and not all_:
        err.print("more: use --all", highlight=False)


def _dump(s: Store, conv: Conversation) -> dict[str, Any]:
    msgs = s.messages(conv.id, tenant=conv.tenant)
    state = s.load_state(conv.id, tenant=conv.tenant)
    return {
        "conversation": _conv_dict(conv),
        "messages": [_jsonable(asdict(m)) for m in msgs],
        "state": {"version": state.version, "value": state.value},
    }


@app.command("show")
def show_cmd(
    conversation_id: Annotated[str, typer.Argument(metavar="ID")],
    store: StoreOpt = DEFAULT_STORE,
    tenant: Annotated[str | None, typer.Option(help="Tenant.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a conversation: fields, transcript and current state."""
    with _opened(store) as s:
        data = _dump(s, s.get(conversation_id, tenant=tenant))
    if as_json:
        _write(json.dumps(data, indent=2))
        return
    table = Table("field", "value", show_header=False)
    for k, v in data["conversation"].items():
        table.add_row(k, json.dumps(v) if isinstance(v, dict) else str(v))
    out.print(table)
    for m in data["messages"]:
        out.print(f"[bold]{m['seq']:>4} {m['role']}[/bold]: ", end="")
        out.print(m["content"], markup=False, highlight=False)
    st = data["state"]
    out.print(f"state v{st['version']}: ", end="")
    out.print(json.dumps(st["value"]), markup=False, highlight=False)


@app.command("export")
def export_cmd(
    store: StoreOpt = DEFAULT_STORE,
    tenant: TenantOpt = "default",
    output: Annotated[str, typer.Option("-o", "--output", help="File, or - for stdout.")] = "-",
) -> None:
    """Export a tenant's conversations as JSONL.

    One line per conversation: {"conversation", "messages", "state": {"version", "value"},
    "facts"} where facts are the contact's remembered facts.
    """
    to_stdout = output == "-"
    with _opened(store) as s:
        convs: list[Conversation] = []
        cursor: str | None = None
        while True:
            page = s.list(tenant=tenant, limit=200, cursor=cursor)
            convs.extend(page.items)
            if (cursor := page.next_cursor) is None:
                break
        fh: IO[str] = sys.stdout if to_stdout else open(output, "w", encoding="utf-8")  # noqa: SIM115
        facts_seen: dict[str, list[dict[str, Any]]] = {}
        try:
            with Progress(console=err, disable=to_stdout or len(convs) < 50) as progress:
                task = progress.add_task("export", total=len(convs))
                for conv in convs:
                    line = _dump(s, conv)
                    if conv.contact_id not in facts_seen:
                        facts = s.recall(conv.contact_id, tenant=tenant)
                        facts_seen[conv.contact_id] = [_jsonable(asdict(f)) for f in facts]
                    line["facts"] = facts_seen[conv.contact_id]
                    fh.write(json.dumps(line) + "\n")
                    progress.advance(task)
        finally:
            if not to_stdout:
                fh.close()
    if not to_stdout:
        err.print(f"exported {len(convs)} conversation(s) to {output}", highlight=False)


class _BadLine(Exception):
    pass


def _parse(lineno: int, raw: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise _BadLine(f"line {lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise _BadLine(f"line {lineno}: expected a JSON object")
    conv = data.get("conversation")
    if not isinstance(conv, dict) or not isinstance(conv.get("id"), str):
        raise _BadLine(f"line {lineno}: missing conversation.id")
    if not isinstance(conv.get("contact_id"), str):
        raise _BadLine(f"line {lineno}: missing conversation.contact_id")
    msgs = data.get("messages", [])
    if not isinstance(msgs, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in msgs
    ):
        raise _BadLine(f"line {lineno}: messages must be objects with role and content")
    return data


def _imported_index(s: Store, tenant: str) -> dict[str, Conversation]:
    index: dict[str, Conversation] = {}
    cursor: str | None = None
    while True:
        page = s.list(tenant=tenant, limit=200, cursor=cursor)
        for c in page.items:
            origin = c.metadata.get(IMPORTED_FROM)
            if isinstance(origin, str):
                index[origin] = c
        if (cursor := page.next_cursor) is None:
            return index


def _import_one(
    s: Store, tenant: str, data: dict[str, Any], index: dict[str, Conversation]
) -> bool:
    src = data["conversation"]
    origin: str = src["id"]
    conv = index.get(origin)
    created = conv is None
    if conv is None:
        metadata = dict(src.get("metadata") or {})
        metadata[IMPORTED_FROM] = origin
        conv = s.start(
            src["contact_id"],
            tenant=tenant,
            agent_id=src.get("agent_id"),
            channel=src.get("channel"),
            stage=src.get("stage"),
            metadata=metadata,
        )
        index[origin] = conv
    if conv.status != "closed":
        for m in data.get("messages", []):
            s.append(
                conv.id,
                m["role"],
                m["content"],
                metadata=m.get("metadata") or None,
                idempotency_key=f"import:{origin}:{m.get('seq')}",
                tenant=tenant,
            )
    state = data.get("state") or {}
    if state.get("version", 0) and state.get("value") is not None:
        current = s.load_state(conv.id, tenant=tenant)
        if current.version == 0 or current.value != state["value"]:
            s.save_state(conv.id, state["value"], tenant=tenant)
    conv = s.get(conv.id, tenant=tenant)
    if conv.stage != src.get("stage") and conv.status != "closed":
        conv = s.set_stage(conv.id, src.get("stage"), tenant=tenant)
    target = src.get("status")
    if isinstance(target, str) and conv.status != target:
        # e.g. ``new`` cannot be restored once messages moved the conversation on.
        with contextlib.suppress(IllegalTransition):
            s.set_status(conv.id, target, tenant=tenant)
    known = {f.key: (f.value, f.tier) for f in s.recall(src["contact_id"], tenant=tenant)}
    for f in data.get("facts") or []:
        if not isinstance(f, dict) or not isinstance(f.get("key"), str):
            continue
        tier = f.get("tier", "medium")
        if known.get(f["key"]) != (f.get("value"), tier):
            s.remember(src["contact_id"], f["key"], f.get("value"), tenant=tenant, tier=tier)
    return created


@app.command("import")
def import_cmd(
    file: Annotated[str, typer.Argument(help="JSONL file written by export, or - for stdin.")],
    store: StoreOpt = DEFAULT_STORE,
    tenant: TenantOpt = "default",
) -> None:
    """Import conversations from an export; importing the same file twice changes nothing.

    Kept: contact, agent, channel, metadata, stage, status (when the lifecycle allows it),
    message roles/contents/metadata/order, the current state value and contact facts.
    Not kept: ids (new ones are generated; the original id is stored in
    metadata["imported_from"]), timestamps (those of the import run), state history (only
    the current value is saved, as version 1) and message seqs of trimmed histories.
    """
    try:
        raw = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except OSError as e:
        raise _fail(f"cannot read {file}: {e.strerror}") from None
    lines = [(n, line) for n, line in enumerate(raw.splitlines(), 1) if line.strip()]
    try:
        parsed = [_parse(n, line) for n, line in lines]
    except _BadLine as e:
        raise _fail(str(e)) from None
    created = 0
    with _opened(store) as s:
        index = _imported_index(s, tenant)
        with Progress(console=err, disable=len(parsed) < 50) as progress:
            task = progress.add_task("import", total=len(parsed))
            for (n, _), data in zip(lines, parsed, strict=True):
                try:
                    created += _import_one(s, tenant, data, index)
                except ThreadkeepError as e:
                    raise _fail(f"line {n}: {type(e).__name__}: {e}") from None
                progress.advance(task)
    err.print(f"imported {len(parsed)} conversation(s), {created} new", highlight=False)


@app.command("sweep")
def sweep_cmd(
    store: StoreOpt = DEFAULT_STORE,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count.")] = False,
) -> None:
    """Mark idle conversations and purge expired ones."""
    with _opened(store) as s:
        report = s.sweep(dry_run=dry_run)
    suffix = " (dry run: nothing changed)" if report.dry_run else ""
    _write(
        f"idled: {report.idled}  purged: {report.purged}  "
        f"facts purged: {report.facts_purged}{suffix}"
    )


@app.command("serve")
def serve_cmd(
    store: StoreOpt = DEFAULT_STORE,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Run the HTTP service."""
    try:
        from threadkeep.service.server import run
    except ImportError as e:
        err.print(
            f"[red]error:[/red] the service is not available ({e}); "
            "pip install 'threadkeep\\[service]'",
            highlight=False,
        )
        raise typer.Exit(2) from None
    try:
        run(store_url=store, host=host, port=port, workers=workers)
    except ThreadkeepError as e:
        raise _fail(f"{type(e).__name__}: {e}") from None


_ROLE_PROMPT = {"user": "you", "assistant": "bot", "agent": "agent", "system": "system"}


def _show(messages: list[Message]) -> int:
    """Print messages as ``role> text`` lines; return the last seq printed (0 for none)."""
    last = 0
    for m in messages:
        out.print(f"{_ROLE_PROMPT.get(m.role, m.role)}> ", end="", highlight=False)
        out.print(m.content, markup=False, highlight=False, soft_wrap=True)
        last = m.seq
    return last


def _note(text: str) -> None:
    err.print(f"[dim]{text}[/dim]", highlight=False, soft_wrap=True)


async def _open_conversation(
    s: AsyncStore, conversation_id: str | None, contact: str, tenant: str
) -> Conversation:
    if conversation_id is None:
        return await s.resume(contact, tenant=tenant, channel="cli")
    conv = await s.get(conversation_id, tenant=tenant)
    if conv.status == Status.CLOSED:
        _note(f"conversation {conv.id} is closed; starting a new one for {conv.contact_id}")
        conv = await s.resume(conv.contact_id, tenant=tenant, channel="cli")
    return conv


async def _chat_turn(s: AsyncStore, bot: Bot, conv: Conversation, text: str, wait: float) -> None:
    """Store the line, let the bot answer unless a person has the conversation, store the reply."""
    async with s.turn(conv.id, timeout=wait, tenant=conv.tenant) as turn:
        msg = await turn.append("user", text)
        conv = await s.get(conv.id, tenant=conv.tenant)
        if conv.status == Status.WAITING_AGENT:
            return
        reply = await bot.respond(s, conv, msg)
        if reply:
            await turn.append("assistant", reply)


async def _chat(
    url: str, conversation_id: str | None, contact: str, tenant: str, bot: Bot, wait: float
) -> None:
    async with await threadkeep.open_async(url) as s:
        conv = await _open_conversation(s, conversation_id, contact, tenant)
        _note(f"conversation {conv.id} (resume with --conversation {conv.id})")
        last = _show(await s.messages(conv.id, last=200, tenant=tenant))
        status = conv.status
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                break
            text = line.strip()
            if not text:
                continue
            if text in ("/quit", "/exit"):
                break
            try:
                await _chat_turn(s, bot, conv, text, wait)
            except ConversationClosed:
                # Closed from another screen: the contact's next message starts a new one.
                conv = await s.resume(conv.contact_id, tenant=tenant, channel="cli")
                _note(f"that conversation was closed; continuing in {conv.id}")
                last = 0
                await _chat_turn(s, bot, conv, text, wait)
            # What arrived since the last line: this turn's reply, and any agent's messages.
            fresh = await s.messages(conv.id, after=last, tenant=tenant)
            last = max(last, _show([m for m in fresh if m.role != "user"]))
            last = max([last, *(m.seq for m in fresh)])
            conv = await s.get(conv.id, tenant=tenant)
            if conv.status != status and conv.status == Status.WAITING_AGENT:
                _note("a person from the team has this conversation; the bot is paused")
            elif conv.status != status and status == Status.WAITING_AGENT:
                _note("the bot is back")
            status = conv.status


@app.command("chat")
def chat_cmd(
    store: StoreOpt = DEFAULT_STORE,
    conversation: Annotated[
        str | None, typer.Option(help="Resume this conversation (else the contact's open one).")
    ] = None,
    contact: Annotated[str, typer.Option(help="Contact to chat as.")] = "cli-user",
    tenant: TenantOpt = "default",
    bot: Annotated[
        str, typer.Option(envvar="THREADKEEP_BOT", help="Bot: seller (the demo bot) or echo.")
    ] = "seller",
    wait: Annotated[
        float, typer.Option(help="Seconds to wait while another screen holds the turn.")
    ] = 5.0,
) -> None:
    """Chat with the demo bot in the terminal, one line per message (/quit or EOF ends).

    The conversation is kept in the store, like the web chat's: run the command again (same
    --contact, or --conversation ID) to continue it.
    """
    try:
        chosen = make_cli_bot(bot)
    except ValueError as e:
        err.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(2) from None
    try:
        asyncio.run(_chat(store, conversation, contact, tenant, chosen, wait))
    except ThreadkeepError as e:
        raise _fail(f"{type(e).__name__}: {e}") from None


def main() -> None:
    """Entry point of the ``threadkeep`` console script."""
    app()


if __name__ == "__main__":
    main()
