"""PostgreSQL: server instructions per append, counted by callgrind (deterministic).

Run: ``python -m bench.pg_append_instructions [--tenant] [--keep DIR]`` (needs valgrind and
PostgreSQL's ``initdb``/``pg_ctl``/``postgres`` in ``/usr/lib/postgresql/*/bin``; as root it
runs them as ``postgres``). It makes a private cluster in a temporary directory (a free
loopback port, ``autovacuum = off``), a schema by the store under test (100 conversations by
``resume(tenant=…)``, the log past ``events_kept``, then ``ANALYZE``, as the peer harness's
``settle()`` does), stops it, and runs ``postgres --single`` under ``valgrind
--tool=callgrind`` on a copy, twice: N1 and N2 keyless 200-byte appends round-robin, each an
``EXECUTE`` of the statement the store sends for it (``schema.APPEND_ONE``, one statement
without a function, where the tree has it; ``--function``, or a tree without it:
``SELECT * FROM append_message(…)``, the function ``schema.APPEND`` calls,
``append_message_v2`` from migration 13, with the parameters it sends: migration 8's
signature) and of the ``NOTIFY`` statement, each its own transaction. Each conversation
takes one append through the store first (``new`` becomes ``active``), so every counted
append is the common one (the status stays): ``APPEND_ONE`` appends every time. Besides the
total, the count less single-user mode's printing of the answer (``debugStartup`` and
``debugtup``, not on a client's path, and larger for a wider answer).
Instructions per append = (total at N2 − total at N1) / (N2 − N1): set-up, start-up and
shut-down cancel; single-user mode's printing of each answer is counted, the same in every
run. Run it with ``PYTHONPATH`` at another checkout's ``src`` to compare.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
import uuid

import psycopg

import threadkeep
from threadkeep.backends.postgres import _schema as schema

CONVERSATIONS = 100
#: the on-message table (``_flows._ON_MESSAGE``) as APPEND's four array parameters
ON_MESSAGE = (
    "'{new,active,idle,waiting_agent}', '{active,active,active,waiting_agent}', "
    "'{status.changed,status.changed,status.changed,status.changed}', "
    """'{"{\\"from\\":\\"new\\",\\"to\\":\\"active\\"}",\
"{\\"from\\":\\"active\\",\\"to\\":\\"active\\"}",\
"{\\"from\\":\\"idle\\",\\"to\\":\\"active\\"}",\
"{\\"from\\":\\"waiting_agent\\",\\"to\\":\\"waiting_agent\\"}"}'"""
)
#: the function the store's APPEND calls (each tree's: migration 13 renamed it)
FUNCTION = re.search(r"FROM (\w+)\(", schema.APPEND)
assert FUNCTION is not None
#: the store's own NOTIFY statement (each tree's, so before and after send what they send)
NOTIFY = schema.NOTIFY.replace("%(chan)s", "'tk'")


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise SystemExit(f"no {name} under /usr/lib/postgresql/*/bin")
    return found[-1]


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_as_postgres(), *args], input=stdin, check=True, capture_output=True, text=True
    )


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build(root: str) -> list[str]:
    """Make the cluster and the schema; return the conversation ids."""
    data = f"{root}/data"
    _run(_bin("initdb"), "-D", data, "-A", "trust", "-U", "postgres")
    port = _port()
    opts = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c autovacuum=off -c fsync=off"
    _run(_bin("pg_ctl"), "-D", data, "-o", opts, "-l", f"{root}/log", "-w", "start")
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        with threadkeep.open(f"{url}?schema=bench&pool_size=1") as store:
            ids = [store.resume(f"c{i:03d}", tenant="bench").id for i in range(CONVERSATIONS)]
            for cid in ids:  # new -> active: the counted appends keep the status
                store.append(cid, "user", "x")
        with psycopg.connect(url, autocommit=True, options="-c search_path=bench") as conn:
            conn.execute(  # past events_kept (10,000): each append's event trims one
                "INSERT INTO events (kind, tenant, conversation_id, data_json, at_us) "
                "SELECT 'x', 'fill', 'none', '{}', 0 FROM generate_series(1, 10000)"
            )
            conn.execute("ANALYZE")
    finally:
        _run(_bin("pg_ctl"), "-D", data, "-m", "fast", "-w", "stop")
    return ids


#: APPEND_ONE's parameters in the order of ``PREPARE``: (name, type, value in the script)
ONE = (
    ("tenant", "text", "{who}"),
    ("id", "text", "'{id}'"),
    ("now", "bigint", "{now}"),
    ("stay", "text[]", "'{{active,waiting_agent}}'"),
    ("fence", "bigint", "NULL"),
    ("role", "text", "'user'"),
    ("content", "bytea", "'\\x{content}'"),
    ("metadata_json", "text", "'{{}}'"),
    ("key", "text", "{key}"),
    ("payload", "text", "NULL"),
    ("link", "smallint", "0"),
    ("appended", "text", "'message.appended'"),
    ("keep", "bigint", "10000"),
)


def _one(tenant: bool) -> str:
    """``APPEND_ONE`` (the form the call picks) with ``$n`` for its named parameters."""
    sql = schema.APPEND_ONE.pick("bench" if tenant else None)
    for n, (name, _, _) in enumerate(ONE, start=1):
        sql = sql.replace(f"%({name})s", f"${n}")
    return sql.replace("%%", "%")


def script(ids: list[str], n: int, tenant: bool, function: bool = False) -> str:
    """``n`` appends and their NOTIFY statements, one statement a line."""
    if function:
        prepare = (
            "PREPARE a(text, text, bigint, text, boolean, bigint, text[], text[], text[], "
            "text[], text, text, bytea, text, text, smallint, bigint) AS SELECT * FROM "
            + FUNCTION.group(1)
            + "("
            + ", ".join(f"${i}" for i in range(1, 18))
            + ")"
        )
    else:
        types = ", ".join(kind for _, kind, _ in ONE)
        prepare = f"PREPARE a({types}) AS {_one(tenant)}"
    lines = ["SET search_path = bench", prepare, f"PREPARE b AS {NOTIFY}"]
    who = "'bench'" if tenant else "NULL"
    now = 1_796_105_434_933_285
    content = "78" * 200
    for i in range(n):
        key = f"E'\\\\x1f{uuid.uuid4().hex}'"  # an internal retry key
        cid, at = ids[i % len(ids)], now + i * 1000
        lines.append("BEGIN")
        if function:
            lines.append(
                f"EXECUTE a({who}, '{cid}', {at}, {key}, false, NULL, {ON_MESSAGE}, "
                f"'message.appended', 'user', '\\x{content}', '{{}}', NULL, 0, 10000)"
            )
        else:
            lines.append(schema.INDEX_SCANS)
            values = (v.format(who=who, id=cid, now=at, content=content, key=key) for *_, v in ONE)
            lines.append(f"EXECUTE a({', '.join(values)})")
        lines += ["COMMIT", "EXECUTE b"]
    return "\n".join(lines) + "\n"


def instructions(
    root: str, ids: list[str], n: int, tenant: bool, function: bool = False
) -> tuple[int, int]:
    """Instructions of a single-user server running ``n`` appends on a fresh copy.

    The total, and the total less the printing of the answers (``debugStartup``, ``debugtup``).
    """
    data = f"{root}/run"
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(f"{root}/data", data, symlinks=True)
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
        for base, dirs, files in os.walk(data):
            for name in dirs + files:
                shutil.chown(os.path.join(base, name), "postgres")
    out = f"{root}/callgrind.{n}"
    done = _run(
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        _bin("postgres"),
        "--single",
        "-D",
        data,
        "postgres",
        stdin=script(ids, n, tenant, function),
    )
    if "ERROR" in done.stdout or "ERROR" in done.stderr:
        raise SystemExit(done.stdout[-2000:] + done.stderr[-2000:])
    with open(out) as f:
        total = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.MULTILINE)
    assert total is not None
    return int(total.group(1)), int(total.group(1)) - _printing(out)


def _printing(out: str) -> int:
    """Inclusive instructions of single-user mode's printing of answers, from the dump."""
    shown = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", out],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = re.findall(r"^\s*([\d,]+) .*:(debugStartup|debugtup) ", shown, re.MULTILINE)
    return sum(int(count.replace(",", "")) for count, _ in found)


def main(argv: list[str] | None = None) -> None:
    """Build, count twice, print instructions per append."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n1", type=int, default=100)
    parser.add_argument("--n2", type=int, default=600)
    parser.add_argument("--tenant", action="store_true", help="name the tenant in each call")
    parser.add_argument("--keep", help="a directory to keep the cluster and callgrind files in")
    parser.add_argument(
        "--function",
        action="store_true",
        help="call the function (schema.APPEND's) where the tree has APPEND_ONE",
    )
    args = parser.parse_args(argv)
    function = args.function or not hasattr(schema, "APPEND_ONE")
    root = args.keep or tempfile.mkdtemp(prefix="tk-pgins-")
    os.makedirs(root, exist_ok=True)
    os.chmod(root, 0o777)
    try:
        ids = build(root)
        first = instructions(root, ids, args.n1, args.tenant, function)
        second = instructions(root, ids, args.n2, args.tenant, function)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    per, quiet = ((b - a) / (args.n2 - args.n1) for a, b in zip(first, second, strict=True))
    call = "naming the tenant" if args.tenant else "by bare id"
    how = FUNCTION.group(1) if function else "APPEND_ONE"
    print(
        f"server instructions per append: {per / 1000:.1f}k ({call}, {how}); "
        f"less the answer's printing: {quiet / 1000:.1f}k"
    )


if __name__ == "__main__":
    main()
