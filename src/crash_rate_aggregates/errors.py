"""The exceptions of crash-rate-aggregates.

    CrashAggregatesError       anything the user can fix; the CLI prints its message in one line
    ├── InputError             a ping store, folder or file that cannot be listed, read or inflated
    ├── StoreError             an output store that cannot be opened, read or written
    └── UsageError             an option or setting that makes no sense

Driver errors (sqlite3, psycopg, fsspec...) are mapped to these inside the module that talks
to the driver, never further up.
"""


class CrashAggregatesError(Exception):
    """An error the user can act on; its message is one line."""


class InputError(CrashAggregatesError):
    """A ping store, folder or file that cannot be listed, read or inflated."""


class StoreError(CrashAggregatesError):
    """An output store that cannot be opened, read or written."""


class UsageError(CrashAggregatesError):
    """An option or setting that makes no sense."""
