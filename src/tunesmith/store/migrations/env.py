"""Alembic's environment for the job store.

`Store.migrate` hands over an open connection (already inside its locked transaction) in
`config.attributes["connection"]`; the migrations run in that transaction, so they commit or
roll back as one. For authoring (autogenerate) a URL in `sqlalchemy.url` works too.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from tunesmith.store.schema import Base

config = context.config


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite://")
    with engine.begin() as conn:
        _run(conn)
