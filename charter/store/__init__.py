"""Where events and derived state live.

``base`` is the interface, async and in domain terms, that the engine and the
facade use; ``records`` the plain rows that go in and out. One SQL layer
(``sql``, with every query named in ``queries.sql``) implements it for every
database; a dialect (``sqlite``) overrides only what really differs, and keeps
its migrations in ``migrations/<dialect>/``. SQLite is the default, embedded
store. The store may import ``events``, ``errors``, ``clock`` and the secrets'
redaction, nothing above.
"""

from .base import Store
from .records import EffectRow, NewRun, RequestRow, RunChange, RunRow, RunWrite
from .sql import SQLStore
from .sqlite import SQLiteStore, open_store

__all__ = [
    "EffectRow", "NewRun", "RequestRow", "RunChange", "RunRow", "RunWrite", "SQLStore", "SQLiteStore", "Store",
    "open_store",
]
