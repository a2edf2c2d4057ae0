"""Thin adapters: aiogram routers for Telegram updates, aiohttp routes for the HTTP API."""
