"""Built-in tools. Load them like any tool module: ``--tools charter.builtins.files``."""
