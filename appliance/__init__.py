"""Passel: many NodeODM boxes on a field network, answering as one NodeODM."""

__version__ = "0.1.0"
