"""Alembic migrations for Quorum's schema."""
