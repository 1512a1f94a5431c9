"""The version: the one source is the VERSION file beside this module (the server's package reads it too)."""

from importlib import resources

__version__ = resources.files(__package__).joinpath("VERSION").read_text().strip()
