"""The ``threadkeep`` command: list, show, export, import, sweep, rotate-keys, serve and chat.

Every expected error (a ``ThreadkeepError``) is printed as one red line on stderr and exits 1;
bad usage exits 2.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import IO, Annotated
from urllib.parse import unquote, urlsplit

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Column, Table
from rich.text import Text

import threadkeep
from threadkeep import (
    AsyncStore,
    Conversation,
    ConversationClosed,
    Encryption,
    InvalidInput,
    Message,
    Retention,
    Status,
    Store,
    ThreadkeepError,
    TurnInProgress,
    transfer,
)
from threadkeep.bot import Bot, answer, make_bot

app = typer.Typer(
    help="Keep the conversations of chat agents.", no_args_is_help=True, add_completion=False
)
out = Console()
err = Console(stderr=True)

StoreOpt = Annotated[
    str, typer.Option("--store", envvar="THREADKEEP_STORE", help="Store URL.", show_default=True)
]
TenantOpt = Annotated[str, typer.Option("--tenant", help="Tenant.")]
TtlOpt = Annotated[
    str | None,
    typer.Option(
        "--ttl",
        envvar="THREADKEEP_TTL",
        help="Seconds a conversation lives after its last activity, or 'none' (default 7 days).",
    ),
]
IdleOpt = Annotated[
    float | None,
    typer.Option(
        "--idle-after",
        envvar="THREADKEEP_IDLE_AFTER",
        help="Seconds without activity before a conversation is idle (default 1800).",
    ),
]
WindowOpt = Annotated[
    int | None,
    typer.Option(
        "--window", envvar="THREADKEEP_WINDOW", help="Messages the bot reads as context (20)."
    ),
]


def _retention(ttl: str | None, idle_after: float | None, window: int | None) -> Retention:
    """The retention these options ask for (the defaults where not given)."""
    base = threadkeep.DEFAULT_RETENTION
    if ttl is None:
        life = base.ttl
    elif ttl.strip().lower() in ("none", "never"):
        life = None
    else:
        try:
            life = timedelta(seconds=float(ttl))
        except ValueError:
            raise InvalidInput(f"--ttl {ttl!r} is not a number of seconds or 'none'") from None
    return Retention(
        ttl=life,
        idle_after=base.idle_after if idle_after is None else timedelta(seconds=idle_after),
        window=base.window if window is None else window,
    )


def _error(message: str) -> None:
    """Print ``error: message`` on stderr; the message is shown as given, never read as markup."""
    err.print(Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True)


def _fail(message: str) -> typer.Exit:
    _error(message)
    return typer.Exit(1)


def _sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (relative) or ``sqlite:////`` URL (absolute), else None."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.path in ("", "/", "/:memory:"):
        return None
    return Path(unquote(parts.path[1:]))


@contextmanager
def _opened(url: str, *, existing: bool = True) -> Iterator[Store]:
    """Open the store; with ``existing``, refuse a SQLite file that is not there (a typo)."""
    path = _sqlite_path(url)
    if existing and path is not None and not path.exists():
        raise _fail(f"no store at {path} (check --store or THREADKEEP_STORE); nothing was created")
    try:
        with threadkeep.open(url, encryption=_encryption()) as store:
            yield store
    except ThreadkeepError as e:
        raise _fail(f"{type(e).__name__}: {e}") from None


def _encryption() -> Encryption | None:
    """The keys of ``THREADKEEP_ENCRYPTION_KEYS`` (None when it is unset or empty).

    Raises:
        InvalidInput: malformed keys.
    """
    keys = os.environ.get(Encryption.ENV_VAR, "").strip()
    return Encryption.from_env(keys) if keys else None


def _write(text: str) -> None:
    sys.stdout.write(text + "\n")


@app.command("ls")
def ls_cmd(
    store: StoreOpt = threadkeep.DEFAULT_STORE_URL,
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
            _write(json.dumps(c.to_dict()))
        return
    table = Table("contact", "status", "stage", "messages", "last activity")
    table.columns.insert(0, Column("id", no_wrap=True, min_width=26))
    for c in convs:
        cells = [c.id, c.contact_id, c.status, c.stage or "", str(c.message_count)]
        cells.append(c.last_activity_at.isoformat(timespec="seconds"))
        table.add_row(*map(Text, cells))  # Text: shown as they are, never read as markup
    out.print(table)
    if cursor is not None and not all_:
        err.print("more: use --all", highlight=False)


@app.command("show")
def show_cmd(
    conversation_id: Annotated[str, typer.Argument(metavar="ID")],
    store: StoreOpt = threadkeep.DEFAULT_STORE_URL,
    tenant: Annotated[str | None, typer.Option(help="Tenant.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a conversation: fields, transcript and current state."""
    with _opened(store) as s:
        data = transfer.conversation_record(s, s.get(conversation_id, tenant=tenant))
    if as_json:
        _write(json.dumps(data, indent=2))
        return
    table = Table("field", "value", show_header=False)
    for k, v in data["conversation"].items():
        table.add_row(k, Text(json.dumps(v) if isinstance(v, dict) else str(v)))
    out.print(table)
    for m in data["messages"]:
        out.print(f"[bold]{m['seq']:>4} {m['role']}[/bold]: ", end="")
        out.print(m["content"], markup=False, highlight=False)
    st = data["state"]
    out.print(f"state v{st['version']}: ", end="")
    out.print(json.dumps(st["value"]), markup=False, highlight=False)


@app.command("export")
def export_cmd(
    store: StoreOpt = threadkeep.DEFAULT_STORE_URL,
    tenant: TenantOpt = "default",
    output: Annotated[str, typer.Option("-o", "--output", help="File, or - for stdout.")] = "-",
) -> None:
    """Export a tenant's live conversations as JSONL, one conversation per line.

    Each line is {"conversation", "messages" (the whole history), "state": {"version",
    "value"}, "facts"} where facts are the contact's remembered facts.
    """
    to_stdout = output == "-"
    with _opened(store) as s:
        total, convs = transfer.export_conversations(s, tenant)
        try:
            fh: IO[str] = sys.stdout if to_stdout else open(output, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as e:
            raise _fail(f"cannot write {output}: {e.strerror}") from None
        try:
            with Progress(console=err, disable=to_stdout or total < 50) as progress:
                task = progress.add_task("export", total=total)
                for conv in convs:
                    transfer.write_record(s, conv, fh.write)  # page by page: never a whole history
                    fh.write("\n")
                    progress.advance(task)
        except ThreadkeepError as e:
            raise _fail(f"{type(e).__name__}: {e}") from None
        finally:
            if not to_stdout:
                fh.close()
    if not to_stdout:
        err.print(f"exported {total} conversation(s) to {output}", markup=False, highlight=False)


@app.command("import")
def import_cmd(
    file: Annotated[str, typer.Argument(help="JSONL file written by export, or - for stdin.")],
    store: StoreOpt = threadkeep.DEFAULT_STORE_URL,
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Tenant (default: each record's own).")
    ] = None,
    source_kind: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Move in from a peer's store instead: langchain-redis, langchain-postgres, "
            "openai-sqlite or openai-redis; FILE is then its URL or file (see README).",
        ),
    ] = None,
    ttl: TtlOpt = None,
) -> None:
    """Import conversations from an export; importing the same file twice changes nothing.

    Ids, timestamps, messages, metadata, stage, status, time to live, the current state and
    the contacts' facts are kept. Not kept: earlier state versions (the current value becomes
    version 1) and the seq numbers of a history trimmed by max_messages (renumbered from 1).
    With --from, each session of the peer's store becomes a conversation (--ttl required).
    """
    if source_kind is not None:
        _import_peer(source_kind, file, store, tenant or "default", ttl)
        return
    with _spooled(file) as path:
        # two passes, one record in memory at a time: every line is checked before the first
        # write (a malformed file imports nothing), then read again and imported
        try:
            total = sum(1 for n, line in _lines(path) if transfer.parse_record(line, f"line {n}"))
        except ThreadkeepError as e:
            raise _fail(str(e)) from None
        created = 0
        clock = threadkeep.ManualClock()
        try:
            with (
                threadkeep.open(store, clock=clock, encryption=_encryption()) as s,
                Progress(console=err, disable=total < 50) as progress,
            ):
                task = progress.add_task("import", total=total)
                for n, line in _lines(path):
                    try:
                        record = transfer.parse_record(line, f"line {n}")
                        created += transfer.import_record(s, clock, record, tenant=tenant)
                    except ThreadkeepError as e:
                        raise _fail(f"line {n}: {type(e).__name__}: {e}") from None
                    progress.advance(task)
        except ThreadkeepError as e:
            raise _fail(f"{type(e).__name__}: {e}") from None
    err.print(f"imported {total} conversation(s), {created} new", highlight=False)


@contextmanager
def _spooled(file: str) -> Iterator[Path]:
    """The export file to read (twice): ``file`` itself, or stdin copied to a temporary file."""
    if file != "-":
        path = Path(file)
        try:
            path.open(encoding="utf-8").close()
        except OSError as e:
            raise _fail(f"cannot read {file}: {e.strerror}") from None
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="threadkeep-import-") as tmp:
        path = Path(tmp) / "stdin.jsonl"
        with path.open("w", encoding="utf-8") as out:
            shutil.copyfileobj(sys.stdin, out)
        yield path


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """The non-blank lines of ``path`` with their numbers, read one at a time."""
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                yield n, line


def _import_peer(kind: str, source: str, store: str, tenant: str, ttl: str | None) -> None:
    """``import --from``: move a peer's sessions in, with a progress bar."""
    from threadkeep import importers  # the public module, imported only when used

    if ttl is None:
        raise _fail("--from needs --ttl: seconds the conversations live, or 'none'")
    clock = threadkeep.ManualClock()
    try:
        retention = _retention(ttl, None, None)
        with (
            threadkeep.open(store, clock=clock, encryption=_encryption()) as s,
            Progress(console=err) as progress,
        ):
            task = progress.add_task(f"import from {escape(kind)}", total=None)
            report = importers.import_sessions(
                s, kind, source, retention=retention, tenant=tenant, clock=clock,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )  # fmt: skip
    except ThreadkeepError as e:
        raise _fail(f"{type(e).__name__}: {e}") from None
    err.print(
        f"imported {report.sessions} session(s) from {kind}: {report.messages} message(s) new, "
        f"{report.replayed} already there, {report.expired} expired at once (idle over --ttl)",
        highlight=False,
    )


@app.command("sweep")
def sweep_cmd(
    store: StoreOpt = threadkeep.DEFAULT_STORE_URL,
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


@app.command("rotate-keys")
def rotate_keys_cmd(
    store: StoreOpt = threadkeep.DEFAULT_STORE_URL,
    tenant: TenantOpt = "default",
    batch: Annotated[int, typer.Option(help="Conversations per page.")] = 100,
) -> None:
    """Rewrite a tenant's stored values under the current key of THREADKEEP_ENCRYPTION_KEYS.

    Values under older keys, and plaintext written before encryption, are re-encrypted in
    place while the store stays in use; run it again until it rewrites nothing.
    """
    if not os.environ.get(Encryption.ENV_VAR, "").strip():
        raise _fail(f"set {Encryption.ENV_VAR} to 'id:base64key,...', the current key first")
    with _opened(store) as s, Progress(console=err) as progress:
        task = progress.add_task(f"re-encrypt tenant {escape(tenant)}", total=None)
        report = s.reencrypt(
            tenant=tenant,
            batch=batch,
            progress=lambda p: progress.update(
                task, completed=p.conversations, description=f"re-encrypt: {p.rewritten} values"
            ),
        )
    _write(
        f"conversations: {report.conversations}  rewritten: {report.rewritten}  "
        f"changed meanwhile: {report.changed}"
    )


@app.command("serve")
def serve_cmd(
    store: StoreOpt = threadkeep.DEFAULT_STORE_URL,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    ttl: TtlOpt = None,
    idle_after: IdleOpt = None,
    window: WindowOpt = None,
    no_worker: Annotated[
        bool,
        typer.Option(
            "--no-worker", help="Run no channel processor here (run `threadkeep worker`)."
        ),
    ] = False,
) -> None:
    """Run the HTTP service (every THREADKEEP_* setting is read from the environment)."""
    if no_worker:
        os.environ["THREADKEEP_CHANNEL_WORKER"] = "false"
    for name, value in (("TTL", ttl), ("IDLE_AFTER", idle_after), ("WINDOW", window)):
        if value is not None:
            os.environ[f"THREADKEEP_{name}"] = str(value)
    try:
        from threadkeep.service.server import run
    except ImportError as e:
        _error(f"the service is not available ({e}); pip install 'threadkeep[service]'")
        raise typer.Exit(2) from None
    try:
        run(store_url=store, host=host, port=port, workers=workers)
    except ThreadkeepError as e:
        raise _fail(f"{type(e).__name__}: {e}") from None


@app.command("api-key")
def api_key_cmd(
    tenant: Annotated[str, typer.Argument(help="The tenant the key belongs to.")],
) -> None:
    """Make a new API key: print it once, and the line that configures it by its hash."""
    try:
        from threadkeep.service.settings import hash_key
    except ImportError as e:
        missing = f"the service is not available ({e}); pip install 'threadkeep[service]'"
        raise _fail(missing) from None
    if not tenant or any(c.isspace() or c in ",:" for c in tenant) or not tenant.isprintable():
        raise _fail("the tenant must be printable, without spaces, commas or colons")
    key = "tk_" + secrets.token_urlsafe(32)
    hashed = hash_key(key)
    _write(f"key (give it to the client; it is not stored anywhere): {key}")
    _write(f"THREADKEEP_API_KEYS entry: {tenant}:{hashed}")
    _write(f"THREADKEEP_API_KEYS_FILE entry: {json.dumps({hashed: tenant})}")


@app.command("worker")
def worker_cmd(store: StoreOpt = threadkeep.DEFAULT_STORE_URL) -> None:
    """Run the channel processor on its own: answer WhatsApp/Twilio messages until SIGTERM.

    The bot, the channels' secrets and API URLs come from the THREADKEEP_* settings, as for
    serve. SIGTERM or Ctrl-C drains: turns in flight finish, the rest waits for the next start.
    """
    os.environ["THREADKEEP_STORE"] = store
    try:
        from threadkeep.channels.worker import run_worker
    except ImportError as e:
        raise _fail(
            f"the channel worker is not available ({e}); pip install 'threadkeep[service]'"
        ) from None
    try:
        asyncio.run(run_worker())
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
    err.print(Text(text, style="dim"), highlight=False, soft_wrap=True)


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


class _Screen:
    """The terminal's view of one conversation: prints what arrives, once, as it arrives."""

    def __init__(self, store: AsyncStore, conv: Conversation) -> None:
        self.store = store
        self.conv = conv
        self.last = 0
        self.status = conv.status
        self.lock = asyncio.Lock()
        self.stopping = asyncio.Event()

    def switch(self, conv: Conversation) -> None:
        self.conv, self.last, self.status = conv, 0, conv.status

    async def refresh(self) -> None:
        """Print the messages stored since the last one shown (not the user's own lines)."""
        async with self.lock:
            conv = self.conv
            fresh = await self.store.messages(conv.id, after=self.last, tenant=conv.tenant)
            _show([m for m in fresh if m.role != "user"])
            self.last = max([self.last, *(m.seq for m in fresh)])
            conv = await self.store.get(conv.id, tenant=conv.tenant)
            if conv.status != self.status and conv.status == Status.WAITING_AGENT:
                _note("a person from the team has this conversation; the bot is paused")
            elif conv.status != self.status and self.status == Status.WAITING_AGENT:
                _note("the bot is back")
            self.status = conv.status

    async def follow(self) -> None:
        """Print an agent's messages (or another screen's) as they arrive, from the events."""
        tenant = self.conv.tenant
        cursor = None
        async for event in self.store.events(tenant=tenant, timeout=0):
            cursor = event.id  # start at the end of the log: only what comes next
        # Stopped by `stopping`, never cancelled: a cancelled read would go on in its thread
        # while the store closes under it.
        while not self.stopping.is_set():
            try:
                async for event in self.store.events(tenant=tenant, after=cursor, timeout=0.5):
                    cursor = event.id
                    if event.conversation_id == self.conv.id:
                        await self.refresh()
            except ThreadkeepError as e:  # the store is down or the cursor fell out of the log
                _note(f"not following changes for a moment: {e}")
                cursor = None
                await asyncio.sleep(1.0)


async def _chat(
    url: str,
    conversation_id: str | None,
    contact: str,
    tenant: str,
    bot: Bot,
    wait: float,
    retention: Retention,
) -> None:
    opened = threadkeep.open_async(url, retention=retention, encryption=_encryption())
    async with await opened as s:
        conv = await _open_conversation(s, conversation_id, contact, tenant)
        _note(f"conversation {conv.id} (resume with --conversation {conv.id})")
        screen = _Screen(s, conv)
        screen.last = _show(await s.messages(conv.id, last=200, tenant=tenant))
        follower = asyncio.create_task(screen.follow())
        try:
            while True:
                line = await asyncio.to_thread(sys.stdin.readline)
                if not line or line.strip() in ("/quit", "/exit"):
                    break
                text = line.strip()
                if not text:
                    continue
                try:
                    await answer(
                        s, bot, text, tenant=tenant, conversation_id=screen.conv.id, wait=wait
                    )
                except TurnInProgress:
                    _note("another screen is answering this conversation; send that again shortly")
                    continue
                except ConversationClosed:
                    # Closed from another screen: the contact's next message starts a new one.
                    fresh = await s.resume(screen.conv.contact_id, tenant=tenant, channel="cli")
                    _note(f"that conversation was closed; continuing in {fresh.id}")
                    screen.switch(fresh)
                    await answer(s, bot, text, tenant=tenant, conversation_id=fresh.id, wait=wait)
                await screen.refresh()
        finally:
            screen.stopping.set()
            await follower  # within half a second: its current wait for events ends first


@app.command("chat")
def chat_cmd(
    store: StoreOpt = threadkeep.DEFAULT_STORE_URL,
    conversation: Annotated[
        str | None, typer.Option(help="Resume this conversation (else the contact's open one).")
    ] = None,
    contact: Annotated[str, typer.Option(help="Contact to chat as.")] = "cli-user",
    tenant: TenantOpt = "default",
    bot: Annotated[
        str,
        typer.Option(
            envvar="THREADKEEP_BOT",
            help="Bot: seller (the demo bot), echo, or package.module:attribute.",
        ),
    ] = "seller",
    wait: Annotated[
        float, typer.Option(help="Seconds to wait while another screen holds the turn.")
    ] = 5.0,
    ttl: TtlOpt = None,
    idle_after: IdleOpt = None,
    window: WindowOpt = None,
) -> None:
    """Chat with the demo bot in the terminal, one line per message (/quit or EOF ends).

    The conversation is kept in the store, like the web chat's: run the command again (same
    --contact, or --conversation ID) to continue it.
    """
    try:
        chosen = make_bot(bot)
        retention = _retention(ttl, idle_after, window)
    except ThreadkeepError as e:
        _error(str(e))
        raise typer.Exit(2) from None
    try:
        asyncio.run(_chat(store, conversation, contact, tenant, chosen, wait, retention))
    except ThreadkeepError as e:
        raise _fail(f"{type(e).__name__}: {e}") from None


def main() -> None:
    """Entry point of the ``threadkeep`` console script."""
    app()


if __name__ == "__main__":
    main()
