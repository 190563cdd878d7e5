"""Errors shared by every layer. A leaf module: it imports nothing from gist-ray."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem; the message names the field, file or value, and is raised before expensive work."""


class GistRayWarning(UserWarning):
    """A warning of gist-ray's own (e.g. a cache it cannot use); shown on the console, where other libraries'
    warnings go to the log file only (:mod:`gist_ray.console`)."""
