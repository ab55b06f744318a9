"""Outbox consumers: sheet_outbox -> Google Sheet -> notification_outbox -> channels (Step 3)."""
