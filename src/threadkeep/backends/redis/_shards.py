"""The sharded layout (``?shard=tenant``): which slot tag a tenant's and a conversation's keys use.

A tenant maps to one of ``BUCKETS`` slot tags, two characters of Crockford base32 taken from a
stable hash of the tenant name (``tenant_tag``). Every key of the tenant — its conversations,
its indexes and facts, the tag's event log, sweep indexes and counters — carries the hash tag
``{prefix:tag}``, so each script still touches one slot, and the tenants of a store spread over
the cluster's nodes (tenants sharing a bucket share a slot). The tag depends on the tenant
alone (not on the prefix), so a conversation keeps its id when it moves to another sharded
store; the prefix is in the hash tag, so two stores spread differently.

A new conversation's id carries its tag (``tagged``: the usual id, ``_``, the tag), so an op
given only the id knows its slot without a lookup (``id_tag``). An id made elsewhere (an
import) carries none: it is recorded in the store's alias hash (``Keys.aliases``), which an op
without a tenant reads first.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

__all__ = ["BUCKETS", "LAYOUTS", "NONE", "TENANT", "id_tag", "tagged", "tenant_tag"]

#: The layouts a store may record: one hash tag for the whole store, or one per tenant bucket.
NONE: Final = "none"
TENANT: Final = "tenant"
LAYOUTS: Final = (NONE, TENANT)

_ALPHABET: Final = "0123456789abcdefghjkmnpqrstvwxyz"  # as _ids.new_id: Crockford, lower case
#: How many slot tags tenants are spread over (32 × 32, two characters).
BUCKETS: Final = len(_ALPHABET) ** 2
#: An id made by a sharded store: a new_id (26 characters), "_", its two-character tag.
_TAGGED: Final = re.compile(r"[0-9a-hjkmnp-tv-z]{26}_([0-9a-hjkmnp-tv-z]{2})")


def tenant_tag(tenant: str) -> str:
    """Return the slot tag of ``tenant``: two characters, the same on every machine."""
    bucket = int.from_bytes(hashlib.blake2b(tenant.encode(), digest_size=8).digest(), "big")
    high, low = divmod(bucket % BUCKETS, len(_ALPHABET))
    return _ALPHABET[high] + _ALPHABET[low]


def tagged(conversation_id: str, tag: str) -> str:
    """Return a new conversation id that carries ``tag``."""
    return f"{conversation_id}_{tag}"


def id_tag(conversation_id: str) -> str | None:
    """Return the tag a sharded store's id carries, or None for an id made elsewhere."""
    found = _TAGGED.fullmatch(conversation_id)
    return None if found is None else found.group(1)
