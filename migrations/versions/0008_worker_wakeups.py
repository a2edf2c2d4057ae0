"""Worker wake-ups: NOTIFY on the channels the idle workers LISTEN on, from the writes that
give them work (cards marked due, new requests and callbacks, silences, failed updates, a chat
active again).

Revision ID: 0008
Revises: 0006
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (trigger, table, timing and events, level and condition, channel). A NOTIFY is delivered at
# commit, once per channel per transaction however many rows fired it, to every listener.
# Row-level triggers with a WHEN clause fire only when work appears: a vote on a card already
# due, or an update stored as handled, queues no trigger event at all.
TRIGGERS = (
    (
        "approval_cards_due_insert",
        "approval_requests",
        "AFTER INSERT",
        "FOR EACH ROW WHEN (NEW.cards_due_at IS NOT NULL)",
        "quorum_cards",
    ),
    (
        "approval_cards_due_update",
        "approval_requests",
        "AFTER UPDATE OF cards_due_at",
        "FOR EACH ROW WHEN (NEW.cards_due_at IS NOT NULL"
        " AND NEW.cards_due_at IS DISTINCT FROM OLD.cards_due_at)",
        "quorum_cards",
    ),
    (
        "alert_cards_due_insert",
        "alerts",
        "AFTER INSERT",
        "FOR EACH ROW WHEN (NEW.card_due_at IS NOT NULL)",
        "quorum_cards",
    ),
    (
        "alert_cards_due_update",
        "alerts",
        "AFTER UPDATE OF card_due_at",
        "FOR EACH ROW WHEN (NEW.card_due_at IS NOT NULL"
        " AND NEW.card_due_at IS DISTINCT FROM OLD.card_due_at)",
        "quorum_cards",
    ),
    (
        "approval_requests_wake",
        "approval_requests",
        "AFTER INSERT",
        "FOR EACH STATEMENT",
        "quorum_approvals",
    ),
    (
        # A chat the bot was added back to: its held outbox rows are ready again.
        "chats_active_wake",
        "chats",
        "AFTER UPDATE OF active",
        "FOR EACH STATEMENT",
        "quorum_outbox",
    ),
    (
        # A request's times moved (a merge extends its expiry): its due times changed.
        "approval_times_wake",
        "approval_requests",
        "AFTER UPDATE OF created_at, expires_at",
        "FOR EACH STATEMENT",
        "quorum_approvals",
    ),
    (
        "callback_deliveries_wake",
        "callback_deliveries",
        "AFTER INSERT",
        "FOR EACH STATEMENT",
        "quorum_approvals",
    ),
    (
        # A held callback released early (its rejection reason arrived); a lease moves it later.
        "callback_deliveries_sooner",
        "callback_deliveries",
        "AFTER UPDATE OF next_attempt_at",
        "FOR EACH ROW WHEN (NEW.next_attempt_at < OLD.next_attempt_at)",
        "quorum_approvals",
    ),
    (
        # Not on am_claimed_until: the worker's own claim must not wake it again.
        "silences_wake",
        "silences",
        "AFTER INSERT OR UPDATE OF am_status, starts_at, ends_at, cancelled_at",
        "FOR EACH STATEMENT",
        "quorum_alerts",
    ),
    (
        # Incident cards: a refresh marked due, a status that pins or unpins the card.
        "incident_cards_due",
        "incidents",
        "AFTER INSERT OR UPDATE OF card_due_at, status",
        "FOR EACH STATEMENT",
        "quorum_cards",
    ),
    (
        # An incident card sent (Telegram gave it a message id): it can be pinned now.
        "incident_card_sent",
        "telegram_messages",
        "AFTER UPDATE OF message_id",
        "FOR EACH ROW WHEN (NEW.purpose = 'incident_card' AND OLD.message_id IS NULL"
        " AND NEW.message_id IS NOT NULL)",
        "quorum_cards",
    ),
    (
        # A storm digest opened: the maintenance worker checks each second whether it settles.
        "alert_digests_wake",
        "alert_digests",
        "AFTER INSERT",
        "FOR EACH STATEMENT",
        "quorum_alerts",
    ),
    (
        "inbound_updates_wake",
        "inbound_updates",
        "AFTER INSERT",
        "FOR EACH ROW WHEN (NEW.status IN ('pending', 'failed'))",
        "quorum_updates",
    ),
)


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION quorum_wake() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify(TG_ARGV[0], '');
            RETURN NULL;
        END $$;
        """
    )
    for name, table, when, level, channel in TRIGGERS:
        op.execute(
            f"CREATE TRIGGER {name} {when} ON {table} {level}"
            f" EXECUTE FUNCTION quorum_wake('{channel}')"
        )


def downgrade() -> None:
    for name, table, *_ in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    op.execute("DROP FUNCTION IF EXISTS quorum_wake()")
