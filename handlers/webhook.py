"""POST /telegram/webhook: secret checked in constant time, update stored before the 200."""

from __future__ import annotations

import hmac
import json
import logging

from aiohttp import web

from bot.inbound import Inbound
from bot.outages import storage_outage

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/telegram/webhook"
INBOUND = web.AppKey("quorum_inbound", Inbound)
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


async def receive_update(request: web.Request) -> web.Response:
    inbound = request.app[INBOUND]
    rt = inbound.rt
    expected = rt.settings.webhook_secret.get_secret_value().encode()
    given = request.headers.get(SECRET_HEADER, "").encode()
    # Checked before the body is read: a forged delivery costs us nothing and stores nothing.
    if not expected or not hmac.compare_digest(given, expected):
        rt.metrics.webhook_rejected.inc()
        return web.json_response(
            {"error": {"code": "unauthorized", "message": "bad webhook secret"}}, status=401
        )
    data = await request.read()
    try:
        body = data.decode()
    except UnicodeDecodeError:
        # Telegram's JSON is always UTF-8: with the right secret this is a forgery (a tap
        # whose callback_data carries raw bytes, say). Nothing is handled; the security
        # log says who it claimed to be.
        return await _refuse_undecodable(inbound, data)
    try:
        raw = json.loads(body)
        if not isinstance(raw, dict) or not isinstance(raw.get("update_id"), int):
            raise ValueError("not an update")
    except ValueError:
        # Telegram never sends this; answering 200 stops a retry loop over garbage.
        log.warning("webhook body is not a Telegram update; ignored")
        return web.json_response({"ok": True})
    try:
        reply = await inbound.receive(raw, source="webhook", body=body)
    except Exception as exc:
        update_id = raw.get("update_id")
        if not storage_outage(exc):
            # Delivered again it would fail again: a 5xx would have Telegram retry it forever
            # (and hold back every later update).
            log.exception(
                "update %s could not be handled nor stored",
                update_id,
                extra={"update_id": update_id},
            )
            return web.json_response({"ok": True})
        log.exception(
            "update %s not stored; asking Telegram to retry",
            update_id,
            extra={"update_id": update_id},
        )
        return web.json_response(
            {"error": {"code": "unavailable", "message": "storage unavailable"}},
            status=503,
            headers={"Retry-After": "2"},
        )
    if reply is None:
        return web.json_response({"ok": True})
    # Telegram executes a method given in the webhook reply: the tap's spinner stops at once.
    return web.json_response(
        {"method": reply.__api_method__, **reply.model_dump(mode="json", exclude_none=True)}
    )


async def _refuse_undecodable(inbound: Inbound, data: bytes) -> web.Response:
    log.warning("webhook body is not valid UTF-8; refused and audited")
    try:
        await inbound.refuse_undecodable(data)
    except Exception as exc:
        if storage_outage(exc):
            return web.json_response(
                {"error": {"code": "unavailable", "message": "storage unavailable"}},
                status=503,
                headers={"Retry-After": "2"},
            )
        raise
    return web.json_response({"ok": True})


def setup(app: web.Application, inbound: Inbound) -> None:
    app[INBOUND] = inbound
    app.router.add_post(WEBHOOK_PATH, receive_update)
