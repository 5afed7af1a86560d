"""The stand-in's cupyx.scipy."""

from . import special  # noqa: F401
