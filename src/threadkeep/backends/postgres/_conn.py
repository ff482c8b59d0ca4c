"""Connection options, the retry policy and migrations, shared by the sync and async drivers.

Lost connections (``psycopg.OperationalError``, pool time-outs included) are retried with
exponential backoff and jitter within the call's deadline, then raised as BackendUnavailable
naming the host (never the password) and the cause; other database errors become BackendError.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
import select
import time
from typing import Any, Final, NoReturn, TypeVar, cast
from urllib.parse import urlsplit

import psycopg
import psycopg_pool

from threadkeep._exceptions import BackendError, BackendUnavailable, InvalidInput
from threadkeep._url import StoreURL
from threadkeep.backends.postgres._flows import COMMIT, Flow, Flows
from threadkeep.backends.postgres._schema import EMIT, NOTIFY, Closing, Unread, may_log
from threadkeep.backends.postgres._wire import Wire

__all__ = [
    "AsyncSession",
    "Attempts",
    "ConnectionOptions",
    "Ending",
    "Session",
    "check_alive",
    "lost_connection",
    "migrate",
    "pump",
    "send_implicit",
    "settle",
]

T = TypeVar("T")

_BASE = 0.05
_CAP = 1.0
_INERROR: Final = psycopg.pq.TransactionStatus.INERROR


class ConnectionOptions:
    """What a driver needs from a ``postgresql://`` URL."""

    def __init__(self, url: StoreURL) -> None:
        parts = urlsplit(url.raw)
        self.conninfo = parts._replace(query="", fragment="").geturl()
        self.host = url.host or "localhost"
        self.schema: str = url.options.get("schema", "threadkeep")
        self.timeout: float = url.options.get("timeout", 5.0)
        self.retries: int = url.options.get("retries", 3)
        self.pool_size: int = url.options.get("pool_size", 0) or 10
        #: hash partitions per table of a schema created now (None: take the schema's)
        self.partitions: int | None = url.options.get("partitions")
        # How long the pool keeps retrying one lost connection (with its own backoff) before
        # it gives up and starts afresh on the next request: this bounds how long calls keep
        # failing after the server is back (psycopg-pool's default is 5 minutes).
        self.reconnect_timeout = max(2.0, self.timeout)
        self.channel = _channel(self.schema)
        #: names the session that waits for events (visible in pg_stat_activity)
        self.listener_name = ("threadkeep-events:" + self.schema)[:63]
        self.kwargs: dict[str, Any] = {
            # read_events and resume's contact lock need a new snapshot per statement: READ
            # COMMITTED whatever the database's or role's default isolation is
            # (quoted: the schema is created quoted, so a name with capitals keeps its case)
            "options": f'-c search_path="{self.schema}" '
            r"-c default_transaction_isolation=read\ committed",
            "application_name": ("threadkeep:" + self.schema)[:63],  # the pool's sessions
            "connect_timeout": max(2, round(self.timeout)),
            # UTF-8 whatever PGCLIENTENCODING or a role's or database's setting says: psycopg
            # encodes text with the client encoding's codec, and EUC_JP's or SJIS's turns "¥"
            # into 0x5C, a backslash to the server (the server converts to its own encoding)
            "client_encoding": "UTF8",
        }

    def pool_kwargs(self, name: str) -> dict[str, Any]:
        """Keyword arguments of a connection pool (sync or async) named ``name-<schema>``."""
        return {
            "min_size": 1,
            "max_size": self.pool_size,
            "kwargs": {
                **self.kwargs,
                "autocommit": True,  # a write's flow opens its transaction
                # psycopg prepares nothing on these sessions (their statements go through
                # ``_wire``, which prepares its own): so its rollback() never sends
                # DEALLOCATE ALL, which would drop ours
                "prepare_threshold": None,
            },
            "timeout": self.timeout,
            "reconnect_timeout": self.reconnect_timeout,
            "open": False,
            "name": f"{name}-{self.schema}",
        }


class Session(psycopg.Connection[Any]):
    """A connection with the ``Wire`` ``pump`` runs its statements on, made once.

    No cursor: the statements go through psycopg's libpq wrapper and one transformer
    (``_wire``). The wire refers to the session (its transformer to its adapters) and it to
    the wire; ``settle`` breaks that cycle when the session is closed, and drops a long result.
    """

    @functools.cached_property
    def wire(self) -> Wire:
        """The session's ``Wire``."""
        return Wire(self)


class AsyncSession(psycopg.AsyncConnection[Any]):
    """``Session`` for the async driver."""

    @functools.cached_property
    def wire(self) -> Wire:
        """The session's ``Wire``."""
        return Wire(self)


#: A result longer than this is not kept between calls (``settle``).
_KEPT_ROWS: Final = 64


def settle(conn: Session | AsyncSession) -> None:
    """Let go of what the session keeps, before it goes back to the pool, if it is too much.

    A closed session's ``Wire`` (the pool discards the session, and the wire's cycle with it
    would keep it and its libpq connection until the garbage collector runs), and a long
    result (a page of large messages would stay in memory, erased ones included, until the
    session's next call). A live session keeps its wire: it knows the statements prepared on
    the session.
    """
    wire = conn.__dict__.get("wire")
    if wire is None:
        return
    if conn.closed:
        del conn.__dict__["wire"]
        return
    result = wire.tx.pgresult
    if result is not None and result.ntuples > _KEPT_ROWS:
        wire.tx.set_pgresult(None)


def _channel(schema: str) -> str:
    """The NOTIFY channel of a schema, at most 63 bytes.

    A longer one fails every NOTIFY (sent after the commit); a long schema name is cut and
    told apart by a hash of it.
    """
    channel = "threadkeep_events_" + re.sub(r"[^a-z0-9_]", "_", schema.lower())
    if len(channel) <= 63:
        return channel
    return channel[:50] + "_" + hashlib.sha256(schema.encode()).hexdigest()[:12]


def lost_connection(exc: Exception) -> bool:
    """Return whether ``exc`` is a lost or refused connection (no server error code)."""
    return (
        isinstance(exc, psycopg.OperationalError)
        and not isinstance(exc, psycopg_pool.PoolTimeout)
        and exc.sqlstate is None
    )


def check_alive(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Raise ``OperationalError`` if the server is closing ``conn``, idle in the pool.

    No round trip: an idle session is sent nothing, unless the server is ending it (a
    restart's or ``pg_terminate_backend``'s FATAL message comes first, the end of the stream
    a moment later), so anything waiting to be read means it is going: it is closed here (the
    pool replaces it). A call whose COMMIT travels with its statements and that is not sent
    again once COMMIT may have left (``Run.once`` and ``Run.together``: save_state) checks
    this first, so a connection dead before the call is retried like any failure before
    COMMIT instead of being reported as a commit of unknown outcome. (A connection lost
    after this check and before the flush still is: a race this narrows, cannot close.)

    ``poll`` (one system call, any descriptor number): ``select`` refuses descriptors past
    FD_SETSIZE (1,024), which a process with many files or sockets open hands out.

    Raises:
        psycopg.OperationalError: the connection is lost or being closed by the server.
    """
    pgconn = conn.pgconn
    try:
        waiting = _readable(pgconn.socket)
    except (OSError, ValueError, psycopg.OperationalError) as exc:
        raise psycopg.OperationalError(f"the connection is lost: {exc}") from exc
    if waiting:
        pgconn.finish()
        raise psycopg.OperationalError("the server closed the connection while it was idle")


def _readable(fd: int) -> bool:
    """Return whether ``fd`` has something to read, an error or a hang-up, without waiting."""
    if _poll is None:  # no poll() (Windows): select there takes any socket number
        return bool(select.select([fd], [], [], 0)[0])
    poller = _poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)  # POLLERR/HUP/NVAL are always told
    return bool(poller.poll(0))


_poll: Final = getattr(select, "poll", None)


class Attempts:
    """The attempts of one call: how long to pause before the next one, or give up."""

    def __init__(self, options: ConnectionOptions) -> None:
        self.options = options
        self.deadline = time.monotonic() + options.timeout
        self.failures = 0

    def remaining(self) -> float:
        """Return the seconds left before the deadline (at least a small positive amount)."""
        return max(0.05, self.deadline - time.monotonic())

    def pause(self, exc: Exception) -> float:
        """Return how long to sleep before trying again.

        Raises:
            BackendUnavailable: the server cannot be reached (retries or time used up).
            BackendError: any other database failure.
        """
        if not isinstance(exc, psycopg.OperationalError):
            self.fail(exc)
        self.failures += 1
        left = self.deadline - time.monotonic()
        if self.failures > self.options.retries or left <= 0:
            self.fail(exc)
        delay = min(_CAP, _BASE * 2 ** (self.failures - 1))
        return min(left, random.uniform(delay / 2, delay))

    def fail(self, exc: Exception) -> NoReturn:
        """Raise the threadkeep error for ``exc``."""
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, psycopg.OperationalError):
            raise BackendUnavailable("postgresql", self.options.host, cause) from exc
        raise BackendError(f"postgresql at {self.options.host} failed: {cause}") from exc


#: Opens a flow's transaction (``pump``): queued in the pipeline, so it costs no round trip.
BEGIN: Final = "BEGIN"
#: Ends it (``Ending``).
END: Final = "COMMIT"


class Ending:
    """How ``pump`` ends a write's transaction, and whether its commit may have been asked for.

    ``together``: the commit is asked for in the flush of the flow's last statements (an
    append is one round trip). Only for calls safe to resend: a connection lost in that flush
    leaves the outcome unknown, as a loss at COMMIT does. Otherwise the flow's statements are
    answered first (their errors included) and COMMIT is a round trip of its own.
    ``committing`` is set once the commit is queued: COMMIT, or the Sync that ends an implicit
    transaction. A pass whose first statement to be answered is the ``Closing`` one of a
    ``together`` call (an append, a release, ``start``, resume, save_state; ``Unread``
    statements may go before it) sends no BEGIN and no COMMIT: the statements before a Sync
    of the extended protocol are one implicit transaction, committed at that Sync if none
    failed, rolled back if one did (``implicit``: how many answers that transaction has). A
    transaction that logged events (``EMIT``) is followed, in the same flush, by a ``NOTIFY``
    on ``channel`` in autocommit (after the COMMIT, or after the Sync in a transaction of its
    own): it wakes the listeners without taking the notify lock inside the writer's commit
    (see ``schema.EMIT``).
    """

    __slots__ = ("channel", "committing", "implicit", "together")

    def __init__(self, channel: str, *, together: bool) -> None:
        self.channel = channel
        self.together = together
        self.committing = False
        self.implicit = 0

    def failed(self, conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
        """Note a pass of ``pump`` that raised: did its commit certainly not happen?

        A server error before the commit (a deadlock, a serialization failure, a lock or
        statement time-out in the flush that carries COMMIT) leaves the session in the failed
        transaction (``INERROR``): the server skipped COMMIT with the rest of that flush, so
        nothing of this pass committed and the call is retried as a failure before COMMIT.
        In an implicit transaction the server rolls back at the Sync and the session is idle
        after it: there, a failed answer among the transaction's own (``Wire.failed``) says
        the same. Anything else (a lost connection, an error of the commit itself or of the
        NOTIFY after it) leaves ``committing`` as it was. A flow that goes on past a
        ``Closing`` statement (save_state's ``_save_locked``) has written nothing in the
        pass before.
        """
        if not self.committing:
            return
        if self.implicit:
            wire = conn.__dict__.get("wire")
            if wire is not None and 0 <= wire.failed < self.implicit:
                self.committing = False
        elif conn.info.transaction_status == _INERROR:
            self.committing = False


def pump(
    conn: Session,
    flow: Flow[T],
    *,
    transaction: bool = False,
    ending: Ending | None = None,
) -> T:
    """Run ``flow`` on ``conn`` (results in binary format: less to parse).

    ``transaction``: run it in one transaction (``conn`` in autocommit mode), in pipeline
    mode; it is committed here when ``ending`` is given (else the caller commits). Each
    statement waits only for the answers it needs: every ``Unread`` statement travels with
    the next statement, and whatever is still unanswered when the flow ends is answered,
    errors included, before this returns. A ``Closing`` statement of a call safe to resend
    (``Ending.together``) travels with the commit and the NOTIFY and is answered when the
    pipeline is left (one round trip); a flow that goes on after it goes on in a new
    transaction. A pass that starts with it (after ``Unread`` statements only) is an
    implicit transaction (``Ending``): no BEGIN, no COMMIT, its Sync commits. BEGIN is
    queued when the pass's first statement that is not ``Unread`` is known to need it.

    The statements go through the session's ``Wire`` (libpq's calls, psycopg's dumpers and
    loaders): the protocol messages psycopg's cursors in ``conn.pipeline()`` sent. A failure
    leaves no pipeline behind: a server error is raised once every answer of its round trip
    is read (the session is then usable, in its failed transaction or rolled back at the
    Sync, ``Ending.failed``); any other (a lost connection, an interrupt, an exception of the
    flow with statements queued) closes the session.
    """
    wire = conn.wire
    try:
        return _pump(wire, flow, transaction, ending)
    except BaseException:
        if wire.busy:
            wire.drain()
        raise


def _pump(wire: Wire, flow: Flow[T], transaction: bool, ending: Ending | None) -> T:
    """``pump``'s passes (``wire`` left as it is on a failure)."""
    rows: Any = None
    if not transaction:
        while True:
            try:
                query, params = flow.send(rows)
            except StopIteration as done:
                return cast(T, done.value)
            if wire.opens():  # not autocommit (migrate): a transaction, as psycopg opens it
                wire.send_alone(BEGIN, None)
                wire.exchange()
            position = wire.send_alone(query, params)
            rows = wire.rows((wire.exchange())[position])
    try:
        query, params = flow.send(rows)
    except StopIteration as done:
        return cast(T, done.value)
    while True:  # a transaction a pass
        closing = False
        ended = False
        emitted = False
        held: list[tuple[str, dict[str, Any]]] = []
        if ending is not None:  # the pass before committed (its commit was answered)
            ending.committing = False
            ending.implicit = 0
        wire.begin()
        while isinstance(query, Unread):  # whether BEGIN goes first: the next statement says
            emitted = emitted or query is EMIT
            held.append((query, params))
            try:
                query, params = flow.send([])
            except StopIteration as done:
                result = cast(T, done.value)
                ended = True
                break
        if ending is not None and ending.together and (ended or isinstance(query, Closing)):
            position = send_implicit(
                wire, ending, held, None if ended else (query, params), emitted
            )
            answers = wire.exchange()
            wire.end()  # every answer is in
            if ended:
                return result
            try:  # the Closing statement's answer
                query, params = flow.send(wire.rows(answers[position]))
            except StopIteration as done:
                return cast(T, done.value)
            continue
        wire.send(BEGIN, None, False)
        for step in held:
            wire.send(step[0], step[1], bool(step[1]))
        while not ended:
            if query == COMMIT[0]:
                wire.send(END, None, False)
                if emitted and ending is not None:
                    wire.send(NOTIFY, {"chan": ending.channel}, False)
                    emitted = False
                wire.sync()  # BEGIN would take the NOTIFY into its transaction
                wire.exchange()
                wire.send(BEGIN, None, False)
                rows = []
            elif isinstance(query, Unread):
                emitted = emitted or query is EMIT
                wire.send(query, params, bool(params))
                rows = []
            elif isinstance(query, Closing) and ending is not None and ending.together:
                position = wire.send(query, params, True)
                ending.committing = True
                wire.send(END, None, False)
                if emitted or may_log(query):
                    wire.send(NOTIFY, {"chan": ending.channel}, False)
                closing = True
                break
            else:
                position = wire.send(query, params, bool(params))
                wire.sync()
                answers = wire.exchange()
                emitted = emitted or may_log(query)  # not together
                rows = wire.rows(answers[position])
            try:
                query, params = flow.send(rows)
            except StopIteration as done:
                result = cast(T, done.value)
                break
        if not closing and ending is not None:
            if not ending.together and wire.queued:  # (none: every statement is answered)
                wire.sync()
                wire.exchange()
            ending.committing = True
            wire.send(END, None, False)
            if emitted:
                wire.send(NOTIFY, {"chan": ending.channel}, False)
        wire.sync()
        answers = wire.exchange()
        wire.end()  # every answer is in
        if not closing:
            return result
        try:  # the Closing statement's answer
            query, params = flow.send(wire.rows(answers[position]))
        except StopIteration as done:
            return cast(T, done.value)


def send_implicit(
    wire: Wire,
    ending: Ending,
    held: list[tuple[str, dict[str, Any]]],
    closing: tuple[str, dict[str, Any]] | None,
    emitted: bool,
) -> int:
    """Queue a pass as an implicit transaction (no BEGIN, no COMMIT: its Sync commits it).

    ``held``: its ``Unread`` statements; ``closing``: its ``Closing`` statement (None when
    the flow ended after ``held``); ``emitted``: whether ``held`` logged events. The NOTIFY,
    when the pass may have logged events, follows with a Sync of its own, outside the
    transaction. Returns the position of ``closing``'s answer (-1: none).
    """
    for query, params in held:
        wire.send(query, params, bool(params))
    position = -1
    if closing is not None:
        position = wire.send(closing[0], closing[1], True)
        emitted = emitted or may_log(closing[0])
    ending.committing = True
    wire.sync()
    ending.implicit = wire.queued
    if emitted:  # after the Sync: outside the transaction
        wire.send(NOTIFY, {"chan": ending.channel}, False)
        wire.sync()
    return position


def migrate(options: ConnectionOptions) -> int:
    """Create the schema if absent and apply missing migrations; return how many ran.

    Both drivers migrate this way, on a connection of its own, when a store is opened.

    Raises:
        BackendUnavailable: the server cannot be reached within the timeout.
        InvalidInput: the URL's ``partitions`` is not what the existing schema was created with.
        BackendError: a newer threadkeep migrated the schema past the versions this one knows.
    """
    attempts = Attempts(options)
    while True:
        try:
            with Session.connect(
                options.conninfo,
                connect_timeout=options.kwargs["connect_timeout"],
                client_encoding=options.kwargs["client_encoding"],
            ) as conn:
                applied, partitions = pump(conn, Flows.migrate(options.schema, options.partitions))
            break
        except psycopg.Error as exc:
            time.sleep(attempts.pause(exc))
    if options.partitions is not None and options.partitions != partitions:
        raise InvalidInput(
            f"schema {options.schema!r} was created with partitions={partitions}, the URL "
            f"asks for partitions={options.partitions}: partitioning is chosen when a schema "
            "is created; leave the option out, or name a new schema",
            field="partitions",
        )
    return applied
