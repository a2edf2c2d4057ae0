"""Approval requests: intake, cards, votes by button, tokens, redemption and maintenance."""

from __future__ import annotations

from bot.approvals.card import (
    RISK_BADGE,
    STATUS_LINE,
    WITHDRAW,
    card_link,
    card_markup,
    mention,
    render_card,
)
from bot.approvals.decision import request_hash
from bot.approvals.outcome import outcome_of
from bot.approvals.plain import count_plainly
from bot.approvals.private_votes import pending_privately
from bot.approvals.publish import refresh_cards
from bot.approvals.redeem import Redeemed, redeem_token
from bot.approvals.requests import (
    PAGE_MAX,
    PAGE_SIZE,
    STATUSES,
    Details,
    NewRequest,
    Page,
    body_digest,
    cancel_request,
    create_request,
    cursor_of,
    find_request,
    find_requests,
    get_request,
    list_page,
    report_result,
)
from bot.approvals.texts import pending_text, status_text, whoami_text
from bot.approvals.voting import (
    CARD_REFRESH_SECONDS,
    VOTE_CODES,
    Tap,
    VoteResult,
    refuse_malformed,
    vote,
    withdraw,
)
from bot.approvals.workers import (
    CALLBACK_SIGNATURE_HEADER,
    callback_key,
    deliver_callbacks,
    escalate_due,
    expire_due,
    maintain_once,
    refresh_due_cards,
    run_maintenance,
    sign_callback,
    warn_due,
)

__all__ = [
    "CALLBACK_SIGNATURE_HEADER",
    "CARD_REFRESH_SECONDS",
    "PAGE_MAX",
    "PAGE_SIZE",
    "RISK_BADGE",
    "STATUSES",
    "STATUS_LINE",
    "VOTE_CODES",
    "WITHDRAW",
    "Details",
    "NewRequest",
    "Page",
    "Redeemed",
    "Tap",
    "VoteResult",
    "body_digest",
    "callback_key",
    "cancel_request",
    "card_link",
    "card_markup",
    "count_plainly",
    "create_request",
    "cursor_of",
    "deliver_callbacks",
    "escalate_due",
    "expire_due",
    "find_request",
    "find_requests",
    "get_request",
    "list_page",
    "maintain_once",
    "mention",
    "outcome_of",
    "pending_privately",
    "pending_text",
    "redeem_token",
    "refresh_cards",
    "refresh_due_cards",
    "refuse_malformed",
    "render_card",
    "report_result",
    "request_hash",
    "run_maintenance",
    "sign_callback",
    "status_text",
    "vote",
    "warn_due",
    "whoami_text",
    "withdraw",
]
