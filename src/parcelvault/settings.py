from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting, read from PARCELVAULT_* environment variables (or a .env file)."""

    model_config = SettingsConfigDict(env_prefix="PARCELVAULT_", env_file=".env", extra="ignore")

    database_url: str = "sqlite:///./parcelvault.db"
    key_dir: Path = Path("./keys")
    keystore_url: str | None = Field(
        default=None,
        description="where wrapped data keys are kept; default: a SQLite file in key_dir",
    )
    kek_max_age_days: int = Field(
        default=365, ge=1, description="`keys status` calls a key-encryption key due after this"
    )
    ledger_signer_max_age_days: int = Field(
        default=730,
        ge=1,
        description="`keys status` calls the checkpoint signing key due after this",
    )
    policy: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    public_rate_limit: int = Field(
        default=120, ge=0, description="public lookups per client address per minute; 0 = off"
    )
    verify_max_failures: int = Field(default=5, ge=1)
    verify_window_seconds: int = Field(default=15 * 60, ge=1)
    recipient_session_seconds: int = Field(default=30 * 60, ge=60)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    trust_forwarded_for: bool = Field(
        default=False, description="take the client address from X-Forwarded-For"
    )
    log_level: str = "INFO"
    ledger_origin: str | None = Field(
        default=None, description="the log's name in checkpoints; chosen at `init` if unset"
    )
    checkpoint_interval_seconds: int = Field(
        default=10, ge=1, description="the most often a new checkpoint is signed"
    )
    smtp_host: str | None = Field(
        default=None, description="mail server for one-time codes; unset = no e-mail sign-in"
    )
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_starttls: bool = Field(default=True, description="upgrade the connection with STARTTLS")
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_ca_file: Path | None = Field(
        default=None, description="CA certificates to trust for STARTTLS (default: the system's)"
    )
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    mail_from: str = "parcelvault <no-reply@localhost>"
    code_ttl_seconds: int = Field(default=10 * 60, ge=60, description="how long a code is valid")
    code_max_attempts: int = Field(default=5, ge=1, description="wrong tries that end a code")
    codes_per_subject_per_hour: int = Field(default=3, ge=1)
    codes_per_client_per_hour: int = Field(default=10, ge=1)
    subject_session_seconds: int = Field(default=30 * 60, ge=60)
    jobs_in_api_process: bool = Field(
        default=True,
        description=(
            "run the background jobs (ledger, retention) in threads of each API process; "
            "`serve` turns this off for its workers and runs `parcelvault jobs` beside them"
        ),
    )
    jobs_heartbeat_timeout_seconds: float = Field(
        default=60.0,
        ge=0,
        description="`serve` restarts its background-jobs process when it has not heard "
        "from it for this long (frozen, or a job stuck in one round); 0 = never",
    )
    health_ledger_lag_seconds: float = Field(
        default=60.0,
        gt=0,
        description="`GET /healthz` reports `degraded` once an entry has waited this long "
        "for the ledger",
    )
    retention_interval_seconds: int = Field(
        default=3600,
        ge=0,
        description="how often `serve` removes values whose retention period ended; 0 = off",
    )
