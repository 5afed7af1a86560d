"""Layers: modules that hold Parameters and compose the functional pairs, each with an explicit backward."""

from .module import Module, Parameter

__all__ = ["Module", "Parameter"]
