"""Domain exceptions shared across the appliance.

Each carries a default message that a clinic's owner can act on; callers add
the specifics (the key, the path) when they raise it.
"""


class ApplianceError(Exception):
    """Base class of every error the appliance raises on purpose."""


class ConfigError(ApplianceError):
    """A setting is missing, unknown or has a value that cannot be used.

    The message always starts with the name of the bad key, so that one line
    on the terminal or in the journal tells the owner what to fix.
    """


class SchemaTooNewError(ApplianceError):
    """A database was written by a newer version of the appliance.

    Older code never opens a newer database: it could misread it or undo a
    migration it does not know.
    """


class DatabaseDamagedError(ApplianceError):
    """A database file cannot be opened or fails its integrity check."""


class StorageFullError(ApplianceError):
    """The data folder has no room left, or refused a write."""
