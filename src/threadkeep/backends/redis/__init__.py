"""The Redis backend: ``redis://`` and ``rediss://`` stores.

Every change is one Lua script run by SHA (``scripts/``), so it is atomic on the server; all
keys of a store share one hash tag, so the scripts also run on Redis Cluster. ``_keys`` names
the keys, ``_scripts`` loads the Lua, ``_codec`` encodes arguments and decodes replies,
``_flows`` holds the multi-step logic once, and ``sync`` / ``aio`` only own connections.
"""
