"""The version, as a literal: reading it costs no import (pyproject.toml takes it from here)."""

__version__ = "0.1.0"
