"""The built-in models, one file each.  The registry finds every ``Model`` defined here."""
