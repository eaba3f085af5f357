"""Hypothesis settings for the property tests: no example database in the work tree."""

from hypothesis import settings

settings.register_profile("nfs-csi", database=None, print_blob=True)
settings.load_profile("nfs-csi")
