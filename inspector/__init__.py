"""inspector: industrial visual-inspection daemon (runtime package)."""

__version__ = "0.1.0"
