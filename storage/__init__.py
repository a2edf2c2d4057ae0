"""Persistence: SQLAlchemy models, repositories, Redis keys (never imports bot/ or handlers/)."""
