"""Approvals handlers (placeholder)."""

from __future__ import annotations

from aiogram import Router
from aiohttp import web

router = Router(name=__name__)
routes = web.RouteTableDef()
