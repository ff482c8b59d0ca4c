"""The co-pilot's costs on SQLite: guidance beside the reads it needs, remembering with
supersession beside a first write, and checking a GoHighLevel webhook's Ed25519 signature.

Run: `make bench` or `python -m bench.bench_crm`.
"""

from __future__ import annotations

import argparse
import base64
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import threadkeep
from bench._util import compare, measure, table
from threadkeep.crm.ghl import Verifier, parse_event
from threadkeep.playbooks import get_playbook

N = 2000

_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
_PUBLIC = """-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAA6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=
-----END PUBLIC KEY-----
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=N)
    n = parser.parse_args(argv).n
    with tempfile.TemporaryDirectory() as tmp:
        store = threadkeep.open(f"sqlite:///{Path(tmp) / 'crm.db'}")
        book = get_playbook("realtor")
        conv = store.start("+15550100", tenant="bench", stage="qualification")
        for i in range(30):
            store.append(conv.id, "user" if i % 2 else "assistant", f"message {i}, rates to drop")
        store.save_state(conv.id, {"timeline_days": 90, "financing": "preapproved"})
        for i in range(10):
            store.remember("+15550100", f"fact{i}", i, tenant="bench", source={"kind": "crm"})

        def reads(_: int) -> object:
            c = store.get(conv.id)
            return (
                store.load_state(c.id),
                store.recall(c.contact_id, tenant=c.tenant),
                store.messages(c.id, last=10),
            )

        def guidance(_: int) -> object:
            return threadkeep.guidance(store, conv.id, book)

        g, r = compare(("guidance() (realtor)", guidance), ("the same 4 reads alone", reads), n)

        def supersede(i: int) -> object:
            return store.remember("+15550100", "email", f"v{i}@x", tenant="bench", tier="low")

        def first(i: int) -> object:
            return store.remember("+15550101", f"k{i}", i, tenant="bench", tier="low")

        s, f = compare(
            ("remember: supersede (20 kept)", supersede), ("remember: new key", first), n
        )
        store.close()
    body = (
        b'{"type":"InboundMessage","locationId":"L","contactId":"c","body":"Hi","messageId":"m",'
        b'"timestamp":"2026-06-02T14:05:12.912Z","webhookId":"w"}'
    )
    headers = {"x-ghl-signature": base64.b64encode(_KEY.sign(body)).decode()}
    verifier = Verifier(_PUBLIC)

    def webhook(_: int) -> object:
        verifier.verify(body, headers)
        return parse_event(body)

    w = measure("webhook: Ed25519 verify + parse", webhook, n)
    table(
        "co-pilot (SQLite)",
        [
            (g, r, "guidance = the reads + the pure rules"),
            (s, f, "a changed value moves the old one to the history"),
            (w, None, "pure, per delivery"),
        ],
    )


if __name__ == "__main__":
    main()
