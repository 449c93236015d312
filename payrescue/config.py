"""Settings from PAYRESCUE_* environment variables and an optional TOML file.

Precedence: explicit arguments, then the environment, then the TOML file named by
PAYRESCUE_CONFIG (or `--config`), then the defaults below.

An empty or blank value (`PAYRESCUE_BOT_TOKEN=`, `port = ""`) means "not set": that is what
a `.env` line without a value or a compose file passing on an unset variable means, so the
default applies, and a required setting says it is missing. Values are trimmed of surrounding
white space (a token pasted with a trailing blank still works).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import make_url

from payrescue.hours import BusinessHours, DailyWindow

ENV_PREFIX = "PAYRESCUE_"
Language = Literal["de", "en"]
BOT_TOKEN = re.compile(r"^[0-9]+:[A-Za-z0-9_-]+$")


class ConfigError(Exception):
    """A setting is wrong or missing; the message is one line meant for the operator."""


class _TrimmedEnvironment(EnvSettingsSource):
    """The environment with values trimmed and blank ones left out, before any parsing (a
    blank list such as PAYRESCUE_DUNNING_DAYS would otherwise fail as broken JSON)."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        loaded = super()._load_env_vars()
        return {key: value.strip() for key, value in loaded.items()
                if value is None or value.strip()}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)
    # False only for commands that sign nothing (`payrescue db upgrade`): see load_settings
    needs_secret: ClassVar[bool] = True

    data_dir: Path = Path("data")
    database_url: str = ""  # empty: an SQLite file in data_dir
    bot_token: SecretStr | None = None
    bot_username: str | None = None  # asked from Telegram (getMe) when not set
    bot_mode: Literal["polling", "webhook"] = "polling"
    telegram_api_base: AnyHttpUrl = AnyHttpUrl("https://api.telegram.org")
    webhook_secret: SecretStr | None = None
    public_base_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8080")
    secret_key: SecretStr | None = None
    default_language: Language = "en"
    business_timezone: str = "Europe/Berlin"
    business_hours: str = "mon-fri 09:00-17:00"
    quiet_hours: str = "21:00-08:00"
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    demo: bool = False
    demo_dir: Path = Path("data/demo")  # what `payrescue demo` and every `--demo` command use
    demo_emulator_port: int | None = Field(default=None, ge=1, le=65535)  # unset: port + 1
    link_token_days: int = Field(default=14, ge=1, le=365)
    admin_chat_id: int | None = None
    # the owner's voice in every member message and e-mail (README, "Your own voice")
    business_name: str | None = Field(default=None, max_length=80)  # e.g. "Gold Club"
    sign_off: str | None = Field(default=None, max_length=80)  # "Lena Berger"; default: the team
    # payment events in (payrescue/billing)
    stripe_webhook_secret: SecretStr | None = None  # whsec_…; several during rotation: "a,b"
    stripe_api_key: SecretStr | None = None  # for Billing Portal sessions and payment look-ups
    stripe_api_base: AnyHttpUrl = AnyHttpUrl("https://api.stripe.com")
    memberpress_webhook_key: SecretStr | None = None  # MEMBERPRESS-WEBHOOK-KEY header
    memberpress_account_url: AnyHttpUrl | None = None  # e.g. https://example.org/account/
    memberpress_currency: str = Field(default="EUR", pattern=r"^[A-Za-z]{3}$")
    generic_api_secret: SecretStr | None = None  # HMAC key for POST /api/v1/events
    update_link_days: int = Field(default=7, ge=1, le=90)
    gateway_fault_threshold: int = Field(default=5, ge=1)  # "processing error" failures …
    gateway_fault_window_minutes: int = Field(default=10, ge=1)  # … within this many minutes
    redis_url: str | None = None  # set when several processes share one database
    # names this deployment on a shared Redis (its channel); default: from the database URL
    instance: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    leader_lease_seconds: float = Field(default=15, ge=1)  # a dead leader's duties move on after
    first_response_minutes: int = Field(default=15, ge=1)  # console highlights later ones
    session_idle_minutes: int = Field(default=120, ge=5, le=7 * 24 * 60)  # console log-in …
    session_hours: int = Field(default=12, ge=1, le=30 * 24)  # … ends at the latest then
    auto_assign: bool = False  # round-robin waiting chats among available agents
    # member conversations (dunning, outbox delivery, handoff)
    dunning_days: list[int] = Field(default=[0, 3, 7], min_length=1)  # days after the failure
    dunning_final_day: int = Field(default=12, ge=1)  # final notice, before the provider gives up
    pre_dunning_days: int = Field(default=14, ge=1)  # warn this long before a card expires
    dunning_tick_seconds: float = Field(default=60, gt=0)
    handoff_amount_minor: int = Field(default=20000, ge=0)  # larger amounts go to a human
    handoff_expected_wait_minutes: int = Field(default=10, ge=1)
    referral_url: AnyHttpUrl | None = None  # offered once after a 4 or 5 rating
    telegram_rate_per_second: float = Field(default=30, gt=0)
    telegram_chat_rate_per_second: float = Field(default=1, gt=0)
    telegram_chat_burst: int = Field(default=3, ge=1)
    outbox_lease_seconds: int = Field(default=60, ge=5)  # a "sending" row older is re-sent
    outbox_retry_seconds: float = Field(default=0.5, gt=0)  # first backoff after a network fault
    # the agents' Telegram group (payrescue.teamgroup): a topic per conversation for a person
    team_note_prefix: str = Field(default="!", min_length=1, max_length=5)  # internal note
    team_group_per_minute: float = Field(default=20, gt=0)  # Telegram's limit per group
    team_group_burst: int = Field(default=20, ge=1)
    team_topic_reopen_hours: float = Field(default=24, ge=0)  # a closed topic is reused within
    team_code_minutes: int = Field(default=60, ge=1, le=24 * 60)  # /connect_team and agent links
    # e-mail, the second channel (mail/): off until smtp_host and smtp_from are set
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"  # tls: implicit, port 465
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = Field(default=30, gt=0)
    smtp_ca_file: Path | None = None  # a CA (PEM) to trust besides the system's: a private relay
    smtp_rate_per_second: float = Field(default=5, gt=0)  # most providers throttle beyond
    smtp_from: str | None = None  # e.g. "Beispiel Club <club@example.org>"
    smtp_reply_to: str | None = None  # where members' replies go (the inbound address)
    email_policy: Literal["fallback", "also_first", "off"] = "fallback"
    # members' replies in: PayRescue's own SMTP receiver (for smtp_reply_to only) …
    smtp_inbound_host: str = "127.0.0.1"
    smtp_inbound_port: int | None = Field(default=None, ge=1, le=65535)  # unset: no receiver
    smtp_inbound_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # … and/or POST /mail/inbound (raw message, X-PayRescue-Signature: HMAC-SHA256 hex)
    mail_inbound_secret: SecretStr | None = None  # unset: no inbound endpoint
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    metrics_token: SecretStr | None = None  # bearer token for GET /metrics; unset: no /metrics

    @model_validator(mode="before")
    @classmethod
    def _blank_means_unset(cls, values: Any) -> Any:
        # the same rule for the TOML file and explicit arguments as for the environment
        if not isinstance(values, dict):
            return values
        return {key: value.strip() if isinstance(value, str) else value
                for key, value in values.items()
                if not (isinstance(value, str) and not value.strip())}

    @field_validator("bot_token")
    @classmethod
    def _bot_token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        # aiogram refuses any other shape with a traceback at start-up; say it here instead
        if value is not None and not BOT_TOKEN.match(value.get_secret_value()):
            raise ValueError("expected the token @BotFather gave you, such as 123456:ABC-def")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _telegram_secret_token(cls, value: SecretStr | None) -> SecretStr | None:
        # Telegram's setWebhook accepts only these; anything else fails at start-up instead
        secret = value.get_secret_value() if value else ""
        if secret and (len(secret) > 256 or not all(
            c.isascii() and (c.isalnum() or c in "_-") for c in secret
        )):
            raise ValueError("expected 1 to 256 characters of A-Z, a-z, 0-9, _ and -")
        return value

    @field_validator("business_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("expected an IANA time zone such as Europe/Berlin") from exc
        return value

    @field_validator("business_hours")
    @classmethod
    def _valid_business_hours(cls, value: str) -> str:
        BusinessHours.parse(value, ZoneInfo("UTC"))
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _valid_quiet_hours(cls, value: str) -> str:
        DailyWindow.parse(value)
        return value

    @model_validator(mode="after")
    def _secret_key_outside_demo(self) -> Settings:
        key = self.secret_key.get_secret_value() if self.secret_key else ""
        if self.needs_secret and not self.demo and len(key) < 32:
            raise ValueError(
                "secret_key: required outside demo mode, at least 32 random characters "
                "(for example: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        if self.bot_mode == "webhook" and not self.webhook_secret:
            raise ValueError("webhook_secret: required when bot_mode is webhook")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _TrimmedEnvironment(settings_cls),
                TomlConfigSettingsSource(settings_cls))

    # Derived values: computed here so every consumer agrees.
    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'payrescue.sqlite3').resolve()}"

    @property
    def instance_name(self) -> str:
        """This deployment's name on a shared Redis: PAYRESCUE_INSTANCE, else one derived
        from the database URL (the processes of one deployment share their database, two
        deployments do not), without the password."""
        if self.instance:
            return self.instance
        url = make_url(self.effective_database_url).render_as_string(hide_password=True)
        return hashlib.sha256(url.encode()).hexdigest()[:12]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.business_timezone)

    @property
    def hours(self) -> BusinessHours:
        return BusinessHours.parse(self.business_hours, self.zone)

    @property
    def quiet(self) -> DailyWindow:
        return DailyWindow.parse(self.quiet_hours)

    @property
    def secret(self) -> bytes:
        if self.secret_key:
            return self.secret_key.get_secret_value().encode()
        if not self.demo:  # loaded with need_secret=False: such a command signs nothing
            raise ConfigError(f"{ENV_PREFIX}SECRET_KEY: required outside demo mode")
        # demo mode only: a key kept in the data directory so links survive a restart
        key_file = self.data_dir / "demo-secret.key"
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            key_file.write_bytes(os.urandom(32).hex().encode())
        return key_file.read_bytes()

    @property
    def email_enabled(self) -> bool:
        return bool(self.smtp_host and self.smtp_from) and self.email_policy != "off"

    def public_url(self, path: str) -> str:
        return str(self.public_base_url).rstrip("/") + path


def load_settings(config_file: str | Path | None = None, *, need_secret: bool = True,
                  **overrides: Any) -> Settings:
    """Build the settings or raise ConfigError with one line naming the culprit.

    `need_secret=False` is for commands that sign nothing, such as `payrescue db upgrade`,
    which a deployment runs before (or without) handing the secret key to that step.
    """
    path = config_file or os.environ.get(f"{ENV_PREFIX}CONFIG")
    if path and not Path(path).is_file():
        raise ConfigError(f"{ENV_PREFIX}CONFIG: no such file: {path}")

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path) if path else SettingsConfigDict()
        needs_secret = need_secret

    try:
        return _FromFile(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except ValueError as exc:  # a TOML syntax error
        raise ConfigError(f"{path}: {exc}") from None


def _describe(exc: ValidationError) -> str:
    error = exc.errors()[0]
    message = str(error["msg"]).removeprefix("Value error, ")
    field = str(error["loc"][0]) if error["loc"] else ""
    if not field and ":" in message:  # a model-level check names its field itself
        field, message = (part.strip() for part in message.split(":", 1))
    name = f"{ENV_PREFIX}{field.upper()}" if field else "configuration"
    if error["type"] == "extra_forbidden":
        return f"{name}: unknown setting"
    given = error.get("input")
    shown = "" if field in {"secret_key", "bot_token", "webhook_secret",
                          "stripe_webhook_secret", "stripe_api_key",
                          "memberpress_webhook_key", "generic_api_secret"} or isinstance(
        given, dict
    ) else f" (got {given!r})"
    return f"{name}: {message}{shown}"
