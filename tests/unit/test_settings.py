"""Settings refuse bad configuration with one line naming the QUORUM_ variable at fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import ConfigError, Settings, load_settings

GOOD_TOKEN = "123456789:AAHfiqksKZ8WmR2zSjiQ7_v4TMAKdiHm9T0"
GOOD_KEY = "k" * 32
WEBHOOK = {
    "telegram_mode": "webhook",
    "webhook_url": "https://bot.example.org/telegram/webhook",
}


pytestmark = pytest.mark.usefixtures("clean_env")


def config_error(**values: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(**values)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_are_valid() -> None:
    s = load_settings()
    assert s.telegram_mode == "polling"
    assert s.telegram_api_url == "https://api.telegram.org"
    assert (s.http_host, s.http_port) == ("127.0.0.1", 8080)
    assert s.database_url == "" and s.redis_url == ""


# ---------------------------------------------------------------- HS256 key


def test_short_hs256_key_is_refused() -> None:
    message = config_error(token_secret="k" * 31)
    assert message.startswith("QUORUM_TOKEN_SECRET:")
    assert "32 bytes" in message
    assert "k" * 31 not in message


def test_hs256_key_length_counts_bytes_not_characters() -> None:
    # 16 two-byte characters are 32 bytes: accepted; 15 are 30 bytes: refused.
    assert load_settings(token_secret="é" * 16).token_secret.get_secret_value() == "é" * 16
    assert config_error(token_secret="é" * 15).startswith("QUORUM_TOKEN_SECRET:")


def test_short_hs256_key_from_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUORUM_TOKEN_SECRET", "too-short")
    assert config_error().startswith("QUORUM_TOKEN_SECRET:")


def test_short_previous_hs256_key_is_refused_for_run() -> None:
    s = load_settings(
        telegram_token=GOOD_TOKEN, token_secret=GOOD_KEY, token_previous_secrets=["old"]
    )
    with pytest.raises(ConfigError, match=r"^QUORUM_TOKEN_PREVIOUS_SECRETS:"):
        s.require_runnable()


def test_run_requires_token_and_key() -> None:
    with pytest.raises(ConfigError, match=r"^QUORUM_TELEGRAM_TOKEN:"):
        load_settings(token_secret=GOOD_KEY).require_runnable()
    with pytest.raises(ConfigError, match=r"^QUORUM_TOKEN_SECRET:"):
        load_settings(telegram_token=GOOD_TOKEN).require_runnable()
    load_settings(telegram_token=GOOD_TOKEN, token_secret=GOOD_KEY).require_runnable()


# ---------------------------------------------------------------- webhook secret


def test_webhook_mode_without_secret_is_refused() -> None:
    message = config_error(**WEBHOOK)
    assert message.startswith("QUORUM_WEBHOOK_SECRET:")
    assert "webhook mode" in message


def test_webhook_mode_without_url_is_refused() -> None:
    message = config_error(telegram_mode="webhook", webhook_secret="s3cret")
    assert message.startswith("QUORUM_WEBHOOK_URL:")


@pytest.mark.parametrize(
    "secret",
    ["has space", "semi;colon", "dots.are.not.allowed", "ünïcode", "slash/", "x" * 257],
    ids=["space", "semicolon", "dot", "non-ascii", "slash", "257-chars"],
)
def test_webhook_secret_outside_telegrams_rule_is_refused(secret: str) -> None:
    message = config_error(webhook_secret=secret, **WEBHOOK)
    assert message.startswith("QUORUM_WEBHOOK_SECRET:")
    assert "A-Z a-z 0-9 _ -" in message


@pytest.mark.parametrize("secret", ["a", "A-z_09", "x" * 256])
def test_webhook_secret_within_telegrams_rule_is_accepted(secret: str) -> None:
    s = load_settings(webhook_secret=secret, **WEBHOOK)
    assert s.webhook_secret.get_secret_value() == secret


def test_webhook_secret_is_not_checked_in_polling_mode() -> None:
    assert load_settings(telegram_mode="polling").telegram_mode == "polling"


# ---------------------------------------------------------------- bot token


@pytest.mark.parametrize(
    "token",
    [
        "not-a-token",
        "987654321",
        "987654321:",
        "987654321:short",
        "bot987654321:AAHfiqksKZ8WmR2zSjiQ7_v4TMAKdiHm9T0",
        "987654321:AAHfiqksKZ8WmR2zSjiQ7/v4TMAKdiHm9T0",
        " 987654321:AAHfiqksKZ8WmR2zSjiQ7_v4TMAKdiHm9T0",
    ],
    ids=["words", "no-colon", "no-secret", "short-secret", "prefix", "slash", "space"],
)
def test_bad_bot_token_shape_is_refused(token: str) -> None:
    message = config_error(telegram_token=token)
    assert message.startswith("QUORUM_TELEGRAM_TOKEN:")
    # The token itself never reaches logs or terminals.
    assert token.strip() not in message


def test_good_bot_token_is_accepted() -> None:
    assert load_settings(telegram_token=GOOD_TOKEN).telegram_token.get_secret_value() == GOOD_TOKEN


def test_bad_token_from_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUORUM_TELEGRAM_TOKEN", "nope")
    assert config_error().startswith("QUORUM_TELEGRAM_TOKEN:")


# ---------------------------------------------------------------- other values


def test_bad_mode_timezone_urls_and_port_name_their_variable() -> None:
    assert config_error(telegram_mode="push").startswith("QUORUM_TELEGRAM_MODE:")
    assert config_error(timezone="Mars/Olympus").startswith("QUORUM_TIMEZONE:")
    assert config_error(database_url="mysql://x").startswith("QUORUM_DATABASE_URL:")
    assert config_error(redis_url="http://x").startswith("QUORUM_REDIS_URL:")
    assert config_error(http_port=70000).startswith("QUORUM_HTTP_PORT:")


def test_env_file_is_read_when_present(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("QUORUM_HTTP_PORT=9191\nQUORUM_TIMEZONE=Europe/Berlin\n")
    s = load_settings()
    assert s.http_port == 9191
    assert s.timezone == "Europe/Berlin"


def test_database_url_is_made_async() -> None:
    s = Settings(database_url="postgresql://u@h:5432/d")
    assert s.async_database_url == "postgresql+asyncpg://u@h:5432/d"
