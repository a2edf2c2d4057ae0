"""Forum topics: the Bot API's create/close/reopen/delete methods and the control routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sandbox.emulator.botapi import BotApi, Handler
from sandbox.emulator.errors import JSON, ApiError, ControlError
from sandbox.emulator.params import get_int, get_opt_int, get_str
from sandbox.emulator.state import THREAD_NOT_FOUND, TOPIC_COLORS, Bot, Chat, Topic

MAX_TOPIC_NAME = 128
_DEFAULT_COLOR = 7322096
_ControlRoute = Callable[[web.Request, JSON], Awaitable[Any]]


class Topics(BotApi):
    """Forum supergroups (`is_forum`): topics are threads whose id is the id of the service
    message that created them; closing one makes sends answer TOPIC_CLOSED, deleting one
    deletes its messages and makes sends answer "message thread not found"."""

    def _topic_methods(self) -> dict[str, tuple[str, Handler]]:
        return {
            name.lower(): (name, handler)
            for name, handler in (
                ("createForumTopic", self._m_create_forum_topic),
                ("closeForumTopic", self._m_close_forum_topic),
                ("reopenForumTopic", self._m_reopen_forum_topic),
                ("deleteForumTopic", self._m_delete_forum_topic),
            )
        }

    def _add_topic_routes(
        self, r: web.UrlDispatcher, ctl: Callable[[_ControlRoute], Any], base: str
    ) -> None:
        r.add_post(f"{base}/chats/{{chat_id}}/topics", ctl(self._c_create_topic))
        for verb in ("close", "reopen", "delete"):
            path = f"{base}/chats/{{chat_id}}/topics/{{thread_id}}/{verb}"
            r.add_post(path, ctl(self._c_topic_action))

    # ------------------------------------------------------------------ state changes

    def _forum(self, chat: Chat) -> Chat:
        if not chat.is_forum:
            raise ApiError(400, "Bad Request: the chat is not a forum")
        return chat

    def _topic(self, chat: Chat, thread_id: int) -> Topic:
        topic = self._forum(chat).topics.get(thread_id)
        if topic is None:
            raise ApiError(400, THREAD_NOT_FOUND)
        return topic

    def _create_topic(self, chat: Chat, from_id: int, name: str, color: int) -> JSON:
        name = name.strip()
        if not name:
            raise ApiError(400, "Bad Request: TOPIC_TITLE_EMPTY")
        if len(name) > MAX_TOPIC_NAME:
            raise ApiError(400, "Bad Request: TOPIC_TITLE_TOO_LONG")
        if color not in TOPIC_COLORS:
            raise ApiError(400, "Bad Request: invalid icon_color specified")
        self._forum(chat)
        extra = {"forum_topic_created": {"name": name, "icon_color": color}}
        msg = self._store_message(chat, from_id, None, extra=extra)
        msg.thread_id = msg.message_id
        topic = Topic(id=msg.message_id, name=name, icon_color=color)
        chat.topics[topic.id] = topic
        return {"message": msg, "topic": topic}

    def _set_closed(self, chat: Chat, from_id: int, thread_id: int, closed: bool) -> JSON:
        topic = self._topic(chat, thread_id)
        if topic.closed == closed:
            raise ApiError(400, "Bad Request: TOPIC_NOT_MODIFIED")
        topic.closed = closed
        key = "forum_topic_closed" if closed else "forum_topic_reopened"
        msg = self._store_message(chat, from_id, None, extra={key: {}}, thread_id=thread_id)
        return {"message": msg, "topic": topic}

    def _delete_topic(self, chat: Chat, thread_id: int) -> None:
        self._topic(chat, thread_id)
        del chat.topics[thread_id]
        for msg in chat.messages.values():
            if msg.thread_id == thread_id:
                msg.deleted = True

    # ------------------------------------------------------------------ Bot API

    async def _m_create_forum_topic(self, bot: Bot, params: JSON) -> Any:
        chat = self._check_chat(bot, get_int(params, "chat_id"))
        color = get_opt_int(params, "icon_color")
        made = self._create_topic(
            chat, bot.id, get_str(params, "name") or "", color or _DEFAULT_COLOR
        )
        return made["topic"].to_api()

    async def _m_close_forum_topic(self, bot: Bot, params: JSON) -> Any:
        chat = self._check_chat(bot, get_int(params, "chat_id"))
        self._set_closed(chat, bot.id, get_int(params, "message_thread_id"), True)
        return True

    async def _m_reopen_forum_topic(self, bot: Bot, params: JSON) -> Any:
        chat = self._check_chat(bot, get_int(params, "chat_id"))
        self._set_closed(chat, bot.id, get_int(params, "message_thread_id"), False)
        return True

    async def _m_delete_forum_topic(self, bot: Bot, params: JSON) -> Any:
        chat = self._check_chat(bot, get_int(params, "chat_id"))
        self._delete_topic(chat, get_int(params, "message_thread_id"))
        return True

    # ------------------------------------------------------------------ control: a user acts

    def _topic_chat(self, request: web.Request) -> Chat:
        chat = self.chats.get(int(request.match_info["chat_id"]))
        if chat is None:
            raise ControlError(404, f"unknown chat {request.match_info['chat_id']}")
        return chat

    async def _c_create_topic(self, request: web.Request, body: JSON) -> Any:
        """A member (an admin) creates a topic; bots get its service message."""
        chat = self._topic_chat(request)
        from_id = int(body.get("from_id") or min(chat.members, default=1))
        made = self._create_topic(
            chat,
            from_id,
            str(body.get("name") or ""),
            int(body.get("icon_color") or _DEFAULT_COLOR),
        )
        self._broadcast({"message": self._message_json(made["message"])})
        return made["topic"].to_api()

    async def _c_topic_action(self, request: web.Request, body: JSON) -> Any:
        """close / reopen / delete a topic, as a member (an admin) of the chat."""
        chat = self._topic_chat(request)
        thread_id = int(request.match_info["thread_id"])
        verb = request.path.rsplit("/", 1)[1]
        if verb == "delete":
            self._delete_topic(chat, thread_id)
            return {"ok": True}
        from_id = int(body.get("from_id") or min(chat.members, default=1))
        made = self._set_closed(chat, from_id, thread_id, verb == "close")
        self._broadcast({"message": self._message_json(made["message"])})
        return {"ok": True, "closed": made["topic"].closed}
