"""Async client for the emulator's control API, for tests, benchmarks and the sandbox."""

from __future__ import annotations

from typing import Any, TypedDict, cast

import aiohttp

from sandbox.emulator.errors import JSON


class EmulatorError(Exception):
    """A control API call failed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class TapResult(TypedDict, total=False):
    update_id: int
    callback_query_id: str
    answer: JSON | None
    message_id: int


class SendResult(TypedDict, total=False):
    update_id: int
    update_ids: list[int]
    message_id: int


class EmulatorClient:
    """Async client for the emulator's control API (``/_emulator/...``)."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._own_session = session is None

    async def __aenter__(self) -> EmulatorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self,
        method: str,
        path: str,
        body: JSON | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.request(
            method, f"{self.base_url}/_emulator{path}", json=body, params=params
        ) as resp:
            try:
                data = await resp.json(content_type=None)
            except ValueError:
                data = None
            if resp.status >= 400:
                message = data.get("error") if isinstance(data, dict) else None
                raise EmulatorError(resp.status, str(message or resp.reason))
            return data

    async def reset(self) -> None:
        await self._request("POST", "/reset", {})

    async def configure(
        self, *, enforce_limits: bool | None = None, limits: dict[str, float] | None = None
    ) -> JSON:
        body: JSON = {}
        if enforce_limits is not None:
            body["enforce_limits"] = enforce_limits
        if limits is not None:
            body["limits"] = limits
        return cast(JSON, await self._request("POST", "/config", body))

    async def add_bot(
        self, token: str, *, username: str | None = None, first_name: str | None = None
    ) -> JSON:
        body: JSON = {"token": token}
        if username:
            body["username"] = username
        if first_name:
            body["first_name"] = first_name
        return cast(JSON, await self._request("POST", "/bots", body))

    async def add_user(
        self, user_id: int, first_name: str, *, username: str | None = None, is_bot: bool = False
    ) -> JSON:
        body: JSON = {"id": user_id, "first_name": first_name, "is_bot": is_bot}
        if username:
            body["username"] = username
        return cast(JSON, await self._request("POST", "/users", body))

    async def add_chat(
        self,
        chat_id: int,
        chat_type: str,
        *,
        title: str | None = None,
        members: list[int] | None = None,
        is_forum: bool = False,
    ) -> JSON:
        body: JSON = {"id": chat_id, "type": chat_type, "members": members or []}
        if is_forum:
            body["is_forum"] = True
        if title is not None:
            body["title"] = title
        return cast(JSON, await self._request("POST", "/chats", body))

    async def chat(self, chat_id: int) -> JSON:
        return cast(JSON, await self._request("GET", f"/chats/{chat_id}"))

    async def send_text(
        self,
        chat_id: int,
        from_id: int,
        text: str,
        *,
        message_thread_id: int | None = None,
        reply_to_message_id: int | None = None,
    ) -> SendResult:
        """The user posts `text` (in a forum topic, or as a reply to a message)."""
        body: JSON = {"from_id": from_id, "text": text}
        if message_thread_id is not None:
            body["message_thread_id"] = message_thread_id
        if reply_to_message_id is not None:
            body["reply_to_message_id"] = reply_to_message_id
        return cast(SendResult, await self._request("POST", f"/chats/{chat_id}/send", body))

    async def reply(self, chat_id: int, message_id: int, from_id: int, text: str) -> SendResult:
        """The user replies to a message (answers a ForceReply question)."""
        body: JSON = {"from_id": from_id, "text": text}
        path = f"/chats/{chat_id}/messages/{message_id}/reply"
        return cast(SendResult, await self._request("POST", path, body))

    async def create_topic(
        self, chat_id: int, name: str, *, from_id: int | None = None, icon_color: int | None = None
    ) -> int:
        """A member creates a forum topic; returns its message_thread_id."""
        body: JSON = {"name": name}
        if from_id is not None:
            body["from_id"] = from_id
        if icon_color is not None:
            body["icon_color"] = icon_color
        result = await self._request("POST", f"/chats/{chat_id}/topics", body)
        return int(result["message_thread_id"])

    async def close_topic(self, chat_id: int, thread_id: int) -> None:
        await self._request("POST", f"/chats/{chat_id}/topics/{thread_id}/close", {})

    async def reopen_topic(self, chat_id: int, thread_id: int) -> None:
        await self._request("POST", f"/chats/{chat_id}/topics/{thread_id}/reopen", {})

    async def delete_topic(self, chat_id: int, thread_id: int) -> None:
        await self._request("POST", f"/chats/{chat_id}/topics/{thread_id}/delete", {})

    async def tap(
        self,
        chat_id: int,
        message_id: int,
        from_id: int,
        *,
        callback_data: str | None = None,
        button_text: str | None = None,
        row: int | None = None,
        col: int | None = None,
        wait: float = 0.0,
    ) -> TapResult:
        body: JSON = {"from_id": from_id, "wait": wait}
        if callback_data is not None:
            body["callback_data"] = callback_data
        if button_text is not None:
            body["button_text"] = button_text
        if row is not None and col is not None:
            body["row"], body["col"] = row, col
        path = f"/chats/{chat_id}/messages/{message_id}/tap"
        return cast(TapResult, await self._request("POST", path, body))

    async def tap_newest(
        self,
        chat_id: int,
        from_id: int,
        *,
        button_text: str | None = None,
        callback_data: str | None = None,
        text_contains: str | None = None,
        wait: float = 0.0,
    ) -> TapResult:
        """Tap the newest message with the button (and text), waiting up to `wait` seconds for
        it to appear and then for the answer."""
        body: JSON = {"from_id": from_id, "wait": wait}
        if callback_data is not None:
            body["callback_data"] = callback_data
        if button_text is not None:
            body["button_text"] = button_text
        if text_contains is not None:
            body["text_contains"] = text_contains
        return cast(TapResult, await self._request("POST", f"/chats/{chat_id}/tap", body))

    async def taps(
        self, taps: list[JSON], *, rate: float = 0.0, concurrency: int = 1, wait: float = 10.0
    ) -> JSON:
        """Let the emulator play many users tapping (see `_c_taps`); returns their answers."""
        body: JSON = {"taps": taps, "rate": rate, "concurrency": concurrency, "wait": wait}
        return cast(JSON, await self._request("POST", "/taps", body))

    async def inject_update(self, update: JSON, *, bot_id: int | None = None) -> int:
        body: JSON = {"update": update}
        if bot_id is not None:
            body["bot_id"] = bot_id
        result = await self._request("POST", "/updates", body)
        return int(result["update_id"])

    async def start_bot(self, user_id: int, payload: str | None = None) -> SendResult:
        """The user opens the private chat with the bot (`/start [payload]`)."""
        body: JSON = {} if payload is None else {"payload": payload}
        return cast(SendResult, await self._request("POST", f"/users/{user_id}/start", body))

    async def block_bot(self, user_id: int) -> list[int]:
        """The user blocks the bot: sends to their private chat answer 403 from now on."""
        result = await self._request("POST", f"/users/{user_id}/block", {})
        return [int(i) for i in result["update_ids"]]

    async def kick(self, chat_id: int, by_user_id: int | None = None) -> list[int]:
        body: JSON = {} if by_user_id is None else {"by_user_id": by_user_id}
        result = await self._request("POST", f"/chats/{chat_id}/kick", body)
        return [int(i) for i in result["update_ids"]]

    async def add_back(self, chat_id: int, by_user_id: int | None = None) -> list[int]:
        body: JSON = {} if by_user_id is None else {"by_user_id": by_user_id}
        result = await self._request("POST", f"/chats/{chat_id}/add", body)
        return [int(i) for i in result["update_ids"]]

    async def migrate(self, chat_id: int, by_user_id: int | None = None) -> int:
        body: JSON = {} if by_user_id is None else {"by_user_id": by_user_id}
        result = await self._request("POST", f"/chats/{chat_id}/migrate", body)
        return int(result["new_chat_id"])

    async def messages(self, chat_id: int) -> list[JSON]:
        return cast(list[JSON], await self._request("GET", f"/chats/{chat_id}/messages"))

    async def calls(self, method: str | None = None, since: int = 0) -> list[JSON]:
        params = {"since": str(since)}
        if method:
            params["method"] = method
        return cast(list[JSON], await self._request("GET", "/calls", params=params))

    async def stats(self) -> JSON:
        return cast(JSON, await self._request("GET", "/stats"))

    async def callback_answer(self, callback_query_id: str, wait: float = 0.0) -> JSON:
        params = {"wait": str(wait)} if wait > 0 else None
        path = f"/callback_answers/{callback_query_id}"
        return cast(JSON, await self._request("GET", path, params=params))

    async def add_fault(
        self,
        kind: str,
        *,
        method: str = "*",
        chat_id: int | None = None,
        count: int = 1,
        after: int = 0,
        status: int | None = None,
        delay: float | None = None,
        retry_after: int | None = None,
        description: str | None = None,
    ) -> JSON:
        body: JSON = {"kind": kind, "method": method, "count": count, "after": after}
        if kind == "callback_too_old" and method == "*":
            body["method"] = "answerCallbackQuery"
        for key, value in (
            ("chat_id", chat_id),
            ("status", status),
            ("delay", delay),
            ("retry_after", retry_after),
            ("description", description),
        ):
            if value is not None:
                body[key] = value
        return cast(JSON, await self._request("POST", "/faults", body))

    async def faults(self) -> list[JSON]:
        result = await self._request("GET", "/faults")
        return cast(list[JSON], result["faults"])

    async def clear_faults(self) -> None:
        await self._request("DELETE", "/faults")

    async def webhook(self) -> JSON:
        return cast(JSON, await self._request("GET", "/webhook"))
