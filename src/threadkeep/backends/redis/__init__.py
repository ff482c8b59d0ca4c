"""The Redis backend: ``redis://`` and ``rediss://`` stores.

Every change is one Lua script run by SHA (``scripts/``), so it is atomic on the server; all
keys a script touches share one hash tag (the store's, or in the sharded layout the tenant's
bucket, ``_shards``), so the scripts also run on Redis Cluster. ``_keys`` names
the keys, ``_scripts`` loads the Lua, ``_codec`` encodes arguments and decodes replies,
``_flows`` holds the multi-step logic once, and ``sync`` / ``aio`` only own connections.

Durability: an acknowledged write is as durable as the server's persistence settings make it
(``appendonly yes`` with ``appendfsync always`` survives a server crash; the defaults may lose
the last second or more). Atomicity: every change, with its indexes, event and TTLs, is one Lua
script, so other clients see all of it or none of it, and nothing reads-modifies-writes a
history.
"""
