"""adamc's version (one place: the package, show_config and the build read it)."""
__version__ = "0.1.0"
