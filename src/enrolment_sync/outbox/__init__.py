"""Outbox consumers: sheet_outbox -> Google Sheet -> notification_outbox -> channels (Step 3)."""

from .sheets import GoogleSheetTarget, SheetsError
from .workbook import LocalWorkbookTarget
from .worker import Consumers, Counters, build, run_consumers

__all__ = ["Consumers", "Counters", "GoogleSheetTarget", "LocalWorkbookTarget", "SheetsError", "build", "run_consumers"]
