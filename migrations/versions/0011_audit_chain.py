"""Audit hash chain: seq/prev_hash/hash sealed once, the writer's xid8, signed checkpoints.

Revision ID: 0011
Revises: 0006
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The writing transaction's id: the sealer only chains rows whose transaction is older
    # than every running one (storage.audit.unsealed). Existing rows get this migration's.
    op.execute(
        "ALTER TABLE audit_log ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id(),"
        " ADD COLUMN seq bigint, ADD COLUMN prev_hash bytea, ADD COLUMN hash bytea"
    )
    # The chain's order is (xid, id), and sealed rows are always a prefix of it, so one index
    # serves the sealer (rows after the head), verify and export. No index covers the chain
    # columns: the sealer's UPDATE can then be a HOT update (no new index entries), given
    # room on the page, which the fillfactor leaves for new pages.
    op.execute("CREATE INDEX ix_audit_log_chain ON audit_log (xid, id)")
    op.execute("ALTER TABLE audit_log SET (fillfactor = 70)")
    # UPDATE stays refused except the one the sealer makes: setting the chain columns of an
    # unsealed row, every other column unchanged.
    # (A row-typed copy compared whole, not to_jsonb: any column added later is covered too,
    # and the sealer's UPDATE cost half as much.)
    op.execute(
        """
        CREATE FUNCTION quorum_audit_seal_only() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            kept audit_log;
        BEGIN
            IF TG_OP = 'UPDATE' AND OLD.seq IS NULL AND NEW.seq IS NOT NULL
               AND NEW.prev_hash IS NOT NULL AND NEW.hash IS NOT NULL THEN
                kept := NEW;
                kept.seq := OLD.seq;
                kept.prev_hash := OLD.prev_hash;
                kept.hash := OLD.hash;
                IF kept IS NOT DISTINCT FROM OLD THEN
                    RETURN NEW;
                END IF;
            END IF;
            RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$;
        """
    )
    op.execute("DROP TRIGGER audit_log_no_update_delete ON audit_log")
    op.execute(
        "CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION quorum_audit_seal_only()"
    )
    op.execute(
        """
        CREATE TABLE audit_checkpoints (
            id bigserial CONSTRAINT pk_audit_checkpoints PRIMARY KEY,
            seq bigint NOT NULL,
            hash bytea NOT NULL,
            signed_at timestamptz NOT NULL,
            key_id text NOT NULL,
            signature bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX ix_audit_checkpoints_seq ON audit_checkpoints (seq)")
    op.execute(
        "CREATE TRIGGER audit_checkpoints_no_update_delete BEFORE UPDATE OR DELETE "
        "ON audit_checkpoints FOR EACH ROW EXECUTE FUNCTION quorum_audit_refuse()"
    )
    op.execute(
        "CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints "
        "FOR EACH STATEMENT EXECUTE FUNCTION quorum_audit_refuse()"
    )
    op.execute(
        """
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'quorum_app') THEN
                GRANT UPDATE (seq, prev_hash, hash) ON audit_log TO quorum_app;
                REVOKE UPDATE, DELETE, TRUNCATE ON audit_checkpoints FROM quorum_app;
            END IF;
        END $$;
        """
    )
    op.execute("REVOKE UPDATE, DELETE, TRUNCATE ON audit_checkpoints FROM PUBLIC")


def downgrade() -> None:
    op.execute("DROP TABLE audit_checkpoints")
    op.execute(
        """
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'quorum_app') THEN
                REVOKE UPDATE (seq, prev_hash, hash) ON audit_log FROM quorum_app;
            END IF;
        END $$;
        """
    )
    op.execute("DROP TRIGGER audit_log_no_update_delete ON audit_log")
    op.execute(
        "CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION quorum_audit_refuse()"
    )
    op.execute("DROP FUNCTION quorum_audit_seal_only()")
    op.execute("ALTER TABLE audit_log RESET (fillfactor)")
    op.execute("DROP INDEX ix_audit_log_chain")
    op.execute(
        "ALTER TABLE audit_log DROP COLUMN hash, DROP COLUMN prev_hash, DROP COLUMN seq,"
        " DROP COLUMN xid"
    )
