"""The SQLAlchemy asyncpg adapter still has the members storage.db.Raw relies on."""

from __future__ import annotations

from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection


def test_adapter_still_has_the_members_raw_reads() -> None:
    # storage.db.begin_deferred uses these; a SQLAlchemy release without them must fail here,
    # not as raw statements silently running outside the session's transaction. They are
    # looked up by name: the test checks a third party's contract and reads none of it.
    adapter = AsyncAdapt_asyncpg_connection
    assert "_transaction" in adapter.__slots__
    assert callable(getattr(adapter, "_start_transaction", None))
    assert any("_execute_mutex" in getattr(k, "__slots__", ()) for k in adapter.__mro__)
