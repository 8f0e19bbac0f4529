"""Alembic migrations of the store: env.py and one file per schema step under versions/.

0001 is the schema of release c403ef5 (the first with a store users kept), 0002 that of release
ff8a351; every later schema change is one more revision. `fleet.store.db.Store.open` runs them.
"""
