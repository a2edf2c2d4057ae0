"""Prometheus metrics, one registry per running app so tests can run several side by side."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.updates_received = Counter(
            "quorum_updates_received", "Telegram updates received", ["source"], registry=r
        )
        self.updates_deduplicated = Counter(
            "quorum_updates_deduplicated", "Duplicate Telegram updates dropped", registry=r
        )
        self.updates_failed = Counter(
            "quorum_updates_failed", "Updates whose handling raised", registry=r
        )
        self.webhook_rejected = Counter(
            "quorum_webhook_rejected", "Webhook deliveries refused (bad secret)", registry=r
        )
        self.outbox_depth = Gauge(
            "quorum_outbox_depth", "Outbox rows waiting, by kind", ["kind"], registry=r
        )
        self.send_latency = Histogram(
            "quorum_send_latency_seconds",
            "Commit of an outbox row to its Telegram call",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.telegram_calls = Counter(
            "quorum_telegram_calls", "Bot API calls made", ["method", "outcome"], registry=r
        )
        self.rate_limited = Counter(
            "quorum_telegram_429", "429 answers received from Telegram", registry=r
        )
        self.retries = Counter("quorum_outbox_retries", "Outbox retries after a fault", registry=r)
        self.dead_letters = Counter(
            "quorum_outbox_dead_letters", "Outbox rows given up on", registry=r
        )
        self.pacing_fallback = Counter(
            "quorum_pacing_fallback",
            "Pacing decisions made in-process because Redis was unavailable",
            registry=r,
        )
        self.outbox_paced = Counter(
            "quorum_outbox_paced", "Outbox rows put back to respect a rate budget", registry=r
        )
        self.votes = Counter("quorum_votes", "Votes by outcome", ["outcome"], registry=r)
        self.votes_plain = Counter(
            "quorum_votes_plain",
            "Approvals counted by one autocommit statement (bot.approvals.plain)",
            registry=r,
        )
        self.alerts_received = Counter(
            "quorum_alerts_received",
            "Alerts received, by intake route (alertmanager, grafana, generic)",
            ["source"],
            registry=r,
        )
        self.alerts_plain = Counter(
            "quorum_alerts_plain",
            "Alert repeats counted by one autocommit statement (bot.alerts.intake)",
            registry=r,
        )
        # Team names come from the policy and severities from P0-P3: closed label sets.
        hours = (60, 300, 900, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 24 * 3600, 72 * 3600)
        self.incident_time_to_acknowledge = Histogram(
            "quorum_incident_time_to_acknowledge_seconds",
            "First alert (or the declaration) to the first acknowledgement or command taken",
            ["team", "severity"],
            buckets=hours,
            registry=r,
        )
        self.incident_time_to_resolve = Histogram(
            "quorum_incident_time_to_resolve_seconds",
            "Declaration of an incident to its first resolution",
            ["team", "severity"],
            buckets=hours,
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
