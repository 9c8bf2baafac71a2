"""wellpanel: the study server (FastAPI), one package per domain."""

__version__ = "0.1.0"
