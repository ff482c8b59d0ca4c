"""The PostgreSQL backend: ``postgresql://`` stores (psycopg 3 with psycopg-pool).

``_schema`` holds the migrations, the SQL and the row codecs, ``_flows`` the logic of every
operation once, as generators of SQL steps; ``sync`` and ``aio`` only own connections and
pump those generators, retrying lost connections with backoff.
"""
