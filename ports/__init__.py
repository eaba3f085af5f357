"""The interfaces the use cases need, as abstract base classes that adapters subclass; declared once, here."""
