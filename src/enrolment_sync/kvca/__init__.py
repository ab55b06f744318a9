"""The KVCA LMS: its contract (`contract`), the client and its wire, and the adapter to domain records."""

from .client import KvcaClient

__all__ = ["KvcaClient"]
