"""storage.models declares what the migrations must create: every timestamp is aware."""

from __future__ import annotations

from sqlalchemy import DateTime

from storage.models import Base


def test_every_timestamp_column_is_timezone_aware() -> None:
    naive = [
        f"{table.name}.{column.name}"
        for table in Base.metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, DateTime) and not column.type.timezone
    ]
    assert naive == []
