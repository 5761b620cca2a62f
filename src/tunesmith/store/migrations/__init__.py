"""Alembic migrations of the job store, run by `Store.migrate` (no alembic.ini needed).

Revisions are plain Python files in `versions/`, shipped with the package. To write a new one,
point Alembic at this folder and a scratch database and let it compare with `schema.py`:

    cfg = alembic.config.Config()
    cfg.set_main_option("script_location", str(tunesmith.store.db.MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", "sqlite:///scratch.db")  # upgraded to head first
    alembic.command.revision(cfg, "what changed", autogenerate=True)

then read and edit the generated file (it must not import `schema.py`: a revision is frozen).
"""
