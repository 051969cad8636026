"""Alembic environment for gpulab's own tables (version table ``gpulab_alembic_version``).

Run through :meth:`hub_plugins.store.db.Database.upgrade`, which passes a connection that already
holds the migration lock.
"""

from alembic import context

from hub_plugins.store.db import VERSION_TABLE
from hub_plugins.store.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,  # SQLite cannot ALTER most things: batch mode copies the table
    # only our tables: JupyterHub's live in the same database and are not ours to touch
    include_name=lambda name, type_, _p: type_ != "table" or name.startswith("gpulab_"),
)
with context.begin_transaction():
    context.run_migrations()
