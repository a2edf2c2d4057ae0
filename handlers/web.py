"""The read-only web view under /ui/ (server-rendered, strict CSP) and /web, which answers a
one-time sign-in link in a private chat."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import Message
from aiohttp import web
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.ext.asyncio import AsyncSession

from bot import approvals, errors
from bot import web as sessions
from bot.audit import queries
from bot.runtime import RUNTIME, Runtime
from handlers.api import ApiError
from handlers.audit import search_of
from storage.outbox import enqueue_text

HERE = Path(__file__).resolve().parent
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # a sign-in link's token must not leak onwards
    "Cache-Control": "no-store",
}

# ---------------------------------------------------------------- Telegram: /web


async def send_link(message: Message, session: AsyncSession, runtime: Runtime) -> None:
    sender = message.from_user
    if message.chat.type != "private" or sender is None:
        text = "Send /web to me in a private chat: sign-in links are personal."
    elif not sessions.approver_teams(runtime, sender.id):
        text = "You are not an approver in any team, so there is nothing to show you."
    else:
        link = sessions.sign_in_link(runtime, sender.id)
        text = (
            f'<a href="{link}">Open Quorum</a>: read-only, for you alone. The link works once,'
            " within 10 minutes."
        )
    await enqueue_text(session, message.chat.id, text)


def make_router() -> Router:
    router = Router(name=__name__)
    router.message.register(send_link, Command("web"), F.from_user)
    return router


# ---------------------------------------------------------------- pages

routes = web.RouteTableDef()
_ENV = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True),
    enable_async=False,
)


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    rt = request.app[RUNTIME]

    def when(value: datetime | None) -> str:
        return "" if value is None else value.astimezone(rt.zone).strftime("%Y-%m-%d %H:%M:%S %Z")

    _ENV.filters["when"] = when
    body = _ENV.get_template(template).render(**context)
    return web.Response(text=body, status=status, content_type="text/html", headers=HEADERS)


def message(request: web.Request, status: int, heading: str, text: str, **ctx: Any) -> web.Response:
    return render(request, "message.html", status, heading=heading, message=text, **ctx)


Page = Callable[[web.Request, sessions.Viewer], Awaitable[web.StreamResponse]]


def signed_in(page: Page) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The page for a live session; otherwise 401 telling how to sign in. Domain errors and
    bad filters become pages, not JSON."""

    async def handler(request: web.Request) -> web.StreamResponse:
        rt = request.app[RUNTIME]
        who = await sessions.viewer(rt, request.cookies.get(sessions.COOKIE))
        if who is None:
            return message(
                request, 401, "Sign in", "Send /web to the bot in a private chat for a link."
            )
        try:
            return await page(request, who)
        except errors.NotFound:
            return message(request, 404, "Not found", "No such request.", viewer=who)
        except ApiError as exc:
            return message(request, exc.status, "Not understood", exc.message, viewer=who)

    return handler


@routes.get("/ui/login")
async def login_form(request: web.Request) -> web.Response:
    # A GET only shows the button: link previews and prefetchers must not spend the link.
    return render(request, "login.html", token=request.query.get("t", "")[:512])


@routes.post("/ui/login")
async def login(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    form = await request.post()
    token = str(form.get("t", ""))[:512]
    try:
        cookie = await sessions.redeem_link(rt, token)
    except errors.TokenRefused as exc:
        return message(request, 401, "Sign-in refused", exc.message)
    response = web.HTTPSeeOther("/ui/", headers=HEADERS)
    response.set_cookie(
        sessions.COOKIE,
        cookie,
        max_age=rt.settings.web_session_seconds,
        path="/ui",
        httponly=True,
        # Behind a TLS-terminating proxy the request itself is plain http.
        secure=request.secure or rt.settings.web_base_url.startswith("https://"),
        samesite="Strict",
    )
    raise response


@routes.post("/ui/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    await sessions.sign_out(request.app[RUNTIME], request.cookies.get(sessions.COOKIE))
    response = message(request, 200, "Signed out", "Send /web again to sign in.")
    response.del_cookie(sessions.COOKIE, path="/ui")
    return response


@routes.get("/ui/static/quorum.css")
async def stylesheet(request: web.Request) -> web.Response:
    css = (HERE / "static" / "quorum.css").read_text()
    return web.Response(text=css, content_type="text/css", headers=HEADERS)


async def _index(request: web.Request, who: sessions.Viewer) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    teams = []
    for team in who.teams:
        pending = await approvals.list_page(rt, team, "pending", limit=50, cursor=None)
        recent = await approvals.list_page(rt, team, None, limit=20, cursor=None)
        teams.append(
            {
                "name": team.name,
                "pending": [d.request for d in pending.items],
                "recent": [d.request for d in recent.items if not d.request.pending],
            }
        )
    return render(request, "index.html", viewer=who, teams=teams)


async def _approval(request: web.Request, who: sessions.Viewer) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    try:
        request_id = uuid.UUID(request.match_info["id"])
    except ValueError:
        raise errors.NotFound("no such request") from None
    for team in who.teams:
        try:
            details = await approvals.get_request(rt, team, request_id)
        except errors.NotFound:
            continue
        team_id = details.request.team_id
        await queries.record_view(rt, team_id, request_id, who.name, who.telegram_id)
        trail = await queries.page(
            rt, team, queries.Search(approval_id=request_id), limit=100, cursor=None
        )
        return render(
            request,
            "approval.html",
            viewer=who,
            team=team.name,
            r=details.request,
            votes=details.votes,
            token=details.token,
            entries=list(reversed(trail.rows)),
        )
    raise errors.NotFound("no such request")


async def _audit(request: web.Request, who: sessions.Viewer) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    team = who.team(request.query.get("team", "")) or who.teams[0]
    query = {k: v for k, v in request.query.items() if k != "cursor" and v}
    try:
        search = search_of(request.clone(rel_url=request.rel_url.with_query(query)))
        found = await queries.page(
            rt, team, search, limit=50, cursor=request.query.get("cursor") or None
        )
    except (ApiError, errors.Invalid) as exc:
        found, problem = queries.Page([], None), exc.message
    else:
        problem = ""
    chain = await queries.chain_status(rt)
    following = None
    if found.next:
        following = "/ui/audit?" + urlencode({**query, "team": team.name, "cursor": found.next})
    return render(
        request,
        "audit.html",
        status=422 if problem else 200,
        viewer=who,
        team=team.name,
        query=query,
        problem=problem,
        entries=found.rows,
        next=following,
        head=chain.head,
        unsealed=chain.unsealed,
        checkpoint=chain.checkpoint,
    )


routes.get("/ui/")(signed_in(_index))
routes.get("/ui/approvals/{id}")(signed_in(_approval))
routes.get("/ui/audit")(signed_in(_audit))
