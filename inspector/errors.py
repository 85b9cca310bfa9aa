"""Errors a user can fix. The CLI prints them as one line (no traceback) and exits non-zero."""


class InspectorError(Exception):
    """Base for expected, user-fixable problems. The message names the thing and what to do."""


class ConfigError(InspectorError):
    """The YAML config is missing, unreadable or invalid."""


class BundleError(InspectorError):
    """The model bundle is missing, corrupt, or does not match the config."""


class DatabaseError(InspectorError):
    """The results database cannot be opened, or its schema is newer/older than this code."""
