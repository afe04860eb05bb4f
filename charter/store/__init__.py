"""Where events and derived state live.

One SQL layer (:mod:`charter.store.sql`, with every query named in
``queries.sql``) serves every database; a dialect overrides only what really
differs. SQLite is the default, embedded store.
"""

from .sql import RunRow, SQLStore, StepRow
from .sqlite import SQLiteStore, open_store

__all__ = ["RunRow", "SQLStore", "SQLiteStore", "StepRow", "open_store"]
