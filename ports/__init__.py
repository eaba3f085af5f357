"""Interfaces the domain needs, as abstract base classes that adapters subclass."""
