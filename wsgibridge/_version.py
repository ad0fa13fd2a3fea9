"""The package version, in one place: no module imports the package root for it."""

__version__ = "0.1.0"
