"""Alembic's entry point: fleet runs migrations in process, on the connection it passes in.

`fleet.store.db` hands over an open connection in `config.attributes["connection"]`; there is no
alembic.ini and no offline (SQL script) mode.
"""

from alembic import context

from fleet.store.db import compare_column_type, target_metadata


def run_migrations_online() -> None:
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=target_metadata(),
        # SQLite cannot ALTER most things; batch mode copies the table instead where it must.
        render_as_batch=True,
        compare_type=compare_column_type,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
