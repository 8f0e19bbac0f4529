"""Alembic migrations of the store: env.py and one file per schema step under versions/.

0001 is the schema of release c403ef5 (the first with a store users kept), 0002 that of release
ff8a351; every later schema change is one more revision. `fleet.store.db.Store.open` runs them.
"""

# The newest revision under versions/, named here so that opening a database already at it needs neither alembic
# nor a read of the scripts (every `fleet` command opens the store). tests/unit/test_migrations.py checks it.
HEAD = "0008"
