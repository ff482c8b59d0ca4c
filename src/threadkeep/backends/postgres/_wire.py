"""A session's statements through psycopg's libpq wrapper, without cursors or pipeline objects.

``_conn.pump`` (and the async driver's ``_pump``) send the statements psycopg's cursors in
``Connection.pipeline()`` sent, with their parameters bound (the extended protocol: Bind and
Execute of a prepared statement, a Sync where the flow waits for answers), through the
documented ``psycopg.pq.PGconn`` (``send_prepare``, ``send_query_prepared``,
``enter_pipeline_mode``, ``pipeline_sync``, ``flush``, ``consume_input``, ``is_busy``,
``get_result``, ``exit_pipeline_mode``) and one ``psycopg.adapt.Transformer`` per session
(the C-accelerated dumpers and loaders a cursor uses). psycopg's per-statement machinery (a
cursor's state, the pipeline's command queue and result bookkeeping, the prepared-statement
counts) cost more than half the client's instructions of an append.

Nothing here is quoted by hand: values are dumped by psycopg's dumpers, chosen as a cursor
chooses them (``PyFormat.AUTO``), and bound. Statements are prepared by name once per session
(``Wire.send``: Parse travels in the pipeline before the first run, no round trip more), as
psycopg prepared them after five runs; the pool's sessions have psycopg's own preparing off
(``prepare_threshold=None``), so psycopg's ``rollback()``, which sends ``DEALLOCATE ALL``
once psycopg prepared anything, never drops ours. Should they be dropped all the same
(someone's ``DEALLOCATE ALL`` or ``DISCARD ALL``, a transaction-mode pooler without prepared
statement support: an error ``26000`` or ``42P05``), that call fails and its session is
closed, so the pool's next one starts clean.

The I/O (``Wire.exchange`` and ``Wire.exchange_async``) waits on the socket as psycopg's
generators do (``psycopg.generators``: flush while consuming input, then read until the
answers are complete). Any failure while answers are outstanding (a lost connection, a
``KeyboardInterrupt``, an asyncio cancellation) closes the libpq connection (``finish``), so
a half-read pipeline never goes back to the pool (the pool drops a closed connection); an
interrupt first asks the server to cancel the statements (``Wire._interrupted``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import re
import select
from typing import Any, Final, cast

import psycopg
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer

__all__ = ["Wire"]

_BINARY: Final = pq.Format.BINARY
_TEXT: Final = pq.Format.TEXT
_TUPLES_OK: Final = pq.ExecStatus.TUPLES_OK
_COMMAND_OK: Final = pq.ExecStatus.COMMAND_OK
_EMPTY_QUERY: Final = pq.ExecStatus.EMPTY_QUERY
_FATAL_ERROR: Final = pq.ExecStatus.FATAL_ERROR
_PIPELINE_SYNC: Final = pq.ExecStatus.PIPELINE_SYNC
_PIPELINE_OFF: Final = pq.PipelineStatus.OFF
_IDLE: Final = pq.TransactionStatus.IDLE
_SQLSTATE: Final = pq.DiagnosticField.SQLSTATE
#: The server's prepared statements are not the ones the session noted (dropped by someone's
#: ``DEALLOCATE ALL``/``DISCARD ALL``, or a pooler's server switch): 26000 "does not exist",
#: 42P05 "already exists"
_DROPPED: Final = frozenset((b"26000", b"42P05"))
#: The longest an interrupted exchange waits for the server to take its cancel request
CANCEL_TIMEOUT: Final = 2.0

#: The names of the prepared statements, by statement text and parameter types (one process)
_NAMES: Final[dict[tuple[bytes, tuple[int, ...]], bytes]] = {}
_NUMBERS: Final = itertools.count()
#: At most this many statements prepared on a session (psycopg's own cap is 100; the
#: drivers' statements and their parameter types' variants are fewer): the rest run unnamed.
_MAX_PREPARED: Final = 256

#: ``%(name)s``, ``%%``, or a lone ``%`` (any other placeholder: refused)
_PLACEHOLDER: Final = re.compile(r"%(?:\((\w+)\)s|(%)|)")


@functools.lru_cache(maxsize=1024)
def convert(query: str) -> tuple[bytes, tuple[str, ...], tuple[PyFormat, ...]]:
    """Return ``query`` with ``$n`` placeholders, the parameters' names in order, their formats.

    As psycopg converts a query with a mapping of parameters: a name used twice is one
    parameter, ``%%`` is ``%``. Statements are the module's constants (and a few built from
    them), so the cache holds them all.

    Raises:
        psycopg.ProgrammingError: a placeholder other than ``%(name)s``.
    """
    names: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is not None:
            return f"${names.setdefault(name, len(names) + 1)}"
        if match.group(2) is not None:
            return "%"
        raise psycopg.ProgrammingError(f"unsupported placeholder in {query[:60]!r}")

    text = _PLACEHOLDER.sub(number, query)
    return text.encode(), tuple(names), (PyFormat.AUTO,) * len(names)


def _error(result: pq.abc.PGresult) -> psycopg.Error:
    """The exception psycopg raises for a failed result (its class by SQLSTATE, with ``diag``).

    ``psycopg.errors.error_from_result`` is what psycopg's cursors call; it is not in the
    documented API, so it is used here only.
    """
    return psycopg.errors.error_from_result(result, encoding="utf-8")


def _first_failure(results: list[pq.abc.PGresult]) -> int:
    """The position of the first failed result among ``results``; -1 when none failed."""
    for position, result in enumerate(results):
        status = result.status
        if status != _TUPLES_OK and status != _COMMAND_OK and status != _EMPTY_QUERY:
            return position
    return -1


def _failure(result: pq.abc.PGresult) -> psycopg.Error:
    """The exception for a failed result (psycopg raises the first failure too)."""
    status = result.status
    if status == _FATAL_ERROR:
        return _error(result)
    if status == pq.ExecStatus.PIPELINE_ABORTED:
        return psycopg.errors.PipelineAborted("pipeline aborted")
    return psycopg.InternalError(f"unexpected result status: {pq.ExecStatus(status).name}")


def _wait(fd: int, write: bool) -> bool:
    """Wait until ``fd`` is readable (or writable, with ``write``); return whether readable."""
    if _poll is None:  # no poll() (Windows): select there takes any socket number
        readable, _, _ = select.select([fd], [fd] if write else [], [])
        return bool(readable)
    poller = _poll()
    poller.register(fd, _RW if write else _R)
    return any(events & _R_ANY for _, events in poller.poll())


_poll: Final = getattr(select, "poll", None)
_R: Final = select.POLLIN | select.POLLPRI
_RW: Final = _R | select.POLLOUT
#: readable, or something consume_input should see (an error, a hang-up)
_R_ANY: Final = _R | select.POLLERR | select.POLLHUP | getattr(select, "POLLNVAL", 0)


class Wire:
    """One session's libpq connection, its transformer, and the answers it waits for.

    Statements are queued with ``send`` (in pipeline mode, ``begin``, with ``sync`` marking
    where answers are awaited), or sent alone (``send_alone``, outside pipeline mode, as
    psycopg's ``execute`` does: a statement without parameters goes by the simple protocol,
    so a migration's script of several statements runs as one). ``exchange`` or
    ``exchange_async`` then flushes and reads the answers, one result per statement.
    """

    __slots__ = (
        "alone", "busy", "conn", "failed", "parsing", "pgconn", "prepared", "queued", "syncs", "tx"
    )  # fmt: skip

    def __init__(self, conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn
        self.pgconn = conn.pgconn
        self.tx = Transformer(conn)
        self.syncs = 0  # Sync messages queued and not answered yet
        self.alone = False  # a statement sent outside pipeline mode, not answered yet
        self.busy = False  # answers outstanding (an exchange failed half way if still set)
        self.prepared: set[bytes] = set()  # statements prepared on the session
        self.parsing: list[tuple[int, bytes]] = []  # Parse queued: (answer's position, name)
        self.queued = 0  # answers to come at the next exchange
        #: the position of the first failed answer of the pass's exchange that read all its
        #: answers; -1: none failed, or no such exchange (``_conn.Ending.failed``)
        self.failed = -1

    # --- queueing (no I/O beyond what libpq flushes on its own) ---

    def begin(self) -> None:
        """Enter pipeline mode (a pass of ``pump``: no answer of it failed yet)."""
        self.pgconn.enter_pipeline_mode()
        self.busy = True
        self.failed = -1

    def send(self, query: str, params: dict[str, Any] | None, binary: bool) -> int:
        """Queue ``query`` with ``params`` bound; ``binary``: its answer in binary format.

        Return the position of its answer among those of the next ``exchange``. The
        statement is prepared (named, once per session and parameter types), as psycopg
        prepared a statement run more than five times: Parse is queued before its first run
        on the session (no longer counted prepared if the server did not run it).
        """
        pgconn = self.pgconn
        tx = self.tx
        if params:
            sql, names, formats = convert(query)
            values = tx.dump_sequence([params[name] for name in names], formats)
            types = tx.types
            key: tuple[bytes, tuple[int, ...]] = (sql, types if types is not None else ())
        else:
            sql = query.encode()
            values = None
            key = (sql, ())
        name = _NAMES.get(key)
        if name is None:  # next() and setdefault() are atomic: one name a key, in any thread
            name = _NAMES.setdefault(key, b"_tk_%d" % next(_NUMBERS))
        result_format = _BINARY if binary else _TEXT
        if name not in self.prepared:
            if len(self.prepared) >= _MAX_PREPARED:  # a session's share of server memory
                pgconn.send_query_params(
                    sql, values, key[1] or None, tx.formats if values else None, result_format
                )
                self.queued += 1
                return self.queued - 1
            pgconn.send_prepare(name, sql, key[1] or None)
            self.prepared.add(name)  # noted now: a second run in this pipeline reuses it
            self.parsing.append((self.queued, name))
            self.queued += 1
        pgconn.send_query_prepared(name, values, tx.formats if values else None, result_format)
        self.queued += 1
        return self.queued - 1

    def sync(self) -> None:
        """Queue a Sync: the statements before it are answered at the next exchange."""
        self.pgconn.pipeline_sync()
        self.syncs += 1

    def send_alone(self, query: str, params: dict[str, Any] | None) -> int:
        """Send ``query`` alone, in a transaction of its own unless one is open.

        With parameters: prepared, and answered at the next exchange with the Sync sent here
        (pipeline mode, left by that exchange). Without: by the simple protocol, outside
        pipeline mode, as psycopg's ``execute`` sends it (a migration's script of several
        statements runs as one; its first answer is the one read). Return the position of
        its answer.

        On a session not in autocommit, a transaction is opened first when none is (BEGIN
        alone, as psycopg's ``execute`` does; ``migrate``'s connection): the caller answers
        it with ``exchange`` before this statement's (``opens``).
        """
        if params:
            self.begin()
            position = self.send(query, params, True)
            self.sync()
            self.alone = True
            return position
        self.busy = True
        self.pgconn.send_query(query.encode())
        self.alone = True
        return 0

    def opens(self) -> bool:
        """Return whether a statement sent alone needs BEGIN first (see ``send_alone``)."""
        return not self.conn.autocommit and self.pgconn.transaction_status == _IDLE

    def end(self) -> None:
        """Leave pipeline mode (every answer read)."""
        self.pgconn.exit_pipeline_mode()
        self.busy = False

    def rows(self, result: pq.abc.PGresult) -> list[Any]:
        """The rows of ``result`` as tuples (``[]`` for a statement that answers none)."""
        if result.nfields == 0 and result.status != _TUPLES_OK:
            return []
        tx = self.tx
        tx.set_pgresult(result)
        return tx.load_rows(0, result.ntuples, tuple)

    # --- I/O ---

    def _take(self, results: list[pq.abc.PGresult]) -> bool:
        """Read what libpq holds into ``results``; return whether every answer is in."""
        pgconn = self.pgconn
        while not pgconn.is_busy():
            result = pgconn.get_result()
            if result is None:
                if not self.syncs:  # a statement sent alone by the simple protocol: done
                    return True
                continue  # the end of one statement's results in a pipeline
            if result.status == _PIPELINE_SYNC:
                self.syncs -= 1
                if not self.syncs:
                    return True
            else:
                results.append(result)
        return False

    def exchange(self) -> list[pq.abc.PGresult]:
        """Flush what is queued and read the answers (to every Sync); raise the first error.

        Any exception on the way (I/O, an interrupt) closes the connection: its answers are
        no longer known.
        """
        pgconn = self.pgconn
        results: list[pq.abc.PGresult] = []
        try:
            fd = pgconn.socket
            while pgconn.flush():  # large statements: read while writing, or both ends block
                if _wait(fd, True):
                    pgconn.consume_input()
            while not self._take(results):
                _wait(fd, False)
                pgconn.consume_input()
        except BaseException as exc:
            if self._interrupted(exc):
                with contextlib.suppress(Exception):
                    conn = cast(psycopg.Connection[Any], self.conn)
                    conn.cancel_safe(timeout=CANCEL_TIMEOUT)
            self.abandon()
            raise
        self._answered(results)
        return results

    async def exchange_async(self) -> list[pq.abc.PGresult]:
        """``exchange``, waiting on the event loop (a cancellation closes the connection)."""
        pgconn = self.pgconn
        results: list[pq.abc.PGresult] = []
        try:
            fd = pgconn.socket
            while pgconn.flush():
                await _wait_async(fd, True)
                pgconn.consume_input()
            while not self._take(results):
                await _wait_async(fd, False)
                pgconn.consume_input()
        except BaseException as exc:
            if self._interrupted(exc):
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    aconn = cast(psycopg.AsyncConnection[Any], self.conn)
                    await aconn.cancel_safe(timeout=CANCEL_TIMEOUT)
            self.abandon()
            raise
        self._answered(results)
        return results

    def _interrupted(self, exc: BaseException) -> bool:
        """Whether ``exc`` interrupted the exchange while the server may be running statements.

        An interrupt (``KeyboardInterrupt``, an asyncio cancellation …): the statements are
        cancelled before the connection closes, so a statement waiting for a lock does not
        commit later.
        Not after a lost connection (a psycopg error): the request would go to a server that
        is not there. The request is psycopg's ``cancel_safe``: a cancel connection of its own,
        waited on without blocking the process, for at most ``CANCEL_TIMEOUT`` seconds.
        """
        return not isinstance(exc, psycopg.Error) and bool(self.syncs or self.alone)

    def _answered(self, results: list[pq.abc.PGresult]) -> None:
        """Note what ``results`` tell (statements prepared, or dropped), then raise any error."""
        for position, name in self.parsing:
            if results[position].status != _COMMAND_OK:  # not prepared (an error before it)
                self.prepared.discard(name)
        self.parsing.clear()
        self.queued = 0
        if self.alone:
            self.alone = False
            if self.pgconn.pipeline_status != _PIPELINE_OFF:
                self.pgconn.exit_pipeline_mode()
            self.busy = False
        failed = _first_failure(results)
        if failed < 0:
            return
        for result in results:
            if result.status == _FATAL_ERROR and result.error_field(_SQLSTATE) in _DROPPED:
                self.abandon()  # what the server holds is not known: the pool makes a new one
                break
        self.failed = failed
        raise _failure(results[failed])

    def abandon(self) -> None:
        """Close the connection: what is queued or unanswered on it cannot be told apart."""
        self.busy = False
        self.failed = -1
        self.syncs = 0
        self.alone = False
        self.parsing.clear()
        self.queued = 0
        self.pgconn.finish()

    def drain(self) -> bool:
        """After an error in pipeline mode with nothing unanswered, leave pipeline mode.

        Return whether the session is clean (else it was closed: ``abandon``). Used when a
        flow raised with statements queued and not sent: those are dropped by closing.
        """
        if not self.busy:
            return True
        if self.syncs == 0 and not self.alone and self.pgconn.pipeline_status != _PIPELINE_OFF:
            try:
                self.end()  # nothing queued since the last answered Sync
                return True
            except psycopg.Error:
                pass
        self.abandon()
        return False


async def _wait_async(fd: int, write: bool) -> None:
    """Wait on the running loop until ``fd`` is readable (or writable, with ``write``)."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    if write:
        loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
        if write:
            loop.remove_writer(fd)
