"""Errors shared by every layer. A leaf module: it imports nothing from gist-ray."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem; the message names the field, file or value, and is raised before expensive work."""
