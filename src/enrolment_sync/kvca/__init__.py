"""The KVCA LMS: its contract as a client, and a simulator of it."""

from .client import KvcaClient

__all__ = ["KvcaClient"]
