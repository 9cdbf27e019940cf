"""What kind of mistake a failing backward made, and on which line."""
from .core import diagnose

__all__ = ["diagnose"]
