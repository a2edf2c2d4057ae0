"""Quorum: Telegram chat-ops approvals and alerts."""
