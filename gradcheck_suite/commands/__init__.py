"""The command line: one module per subcommand, the option values they share in
:mod:`.options`."""
from .cli import main

__all__ = ["main"]
