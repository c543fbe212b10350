"""One settings tree for the whole service.

Every field is read from the environment with the prefix ``STREAMFORGE_``; nested groups use
``__`` (``STREAMFORGE_STREAMING__HEARTBEAT_INTERVAL=5``). A ``.env`` file in the working
directory is read too. README.md documents every field in its configuration table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServerSettings(BaseModel):
    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"


class CorsSettings(BaseModel):
    # Empty means no cross-origin access; ["*"] must be asked for explicitly.
    origins: list[str] = Field(default_factory=list)
    allow_credentials: bool = False


class DatabaseSettings(BaseModel):
    # None: a SQLite file named streamforge.db inside the data directory.
    url: str | None = None
    echo: bool = False
    pool_size: int = Field(default=10, ge=1)


class StreamingSettings(BaseModel):
    heartbeat_interval: float = Field(default=15.0, gt=0)
    send_timeout: float = Field(default=30.0, gt=0)
    retry_ms: int = Field(default=3000, ge=0)
    simulated_delay: float = Field(default=0.1, ge=0)


class LimitsSettings(BaseModel):
    max_message_chars: int = Field(default=32_000, ge=1)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)


class SimulatedSettings(BaseModel):
    # The answer the simulated provider streams word by word; "{message}" is replaced by the
    # user's message. None keeps the original Phase 0 sentence.
    answer: str | None = None
    # Repeat the answer until it has at least this many words (0: say it once).
    min_words: int = Field(default=0, ge=0)


class LLMSettings(BaseModel):
    provider: Literal["simulated"] = "simulated"
    simulated: SimulatedSettings = Field(default_factory=SimulatedSettings)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STREAMFORGE_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    data_dir: Path = Path("./data")
    server: ServerSettings = Field(default_factory=ServerSettings)
    cors: CorsSettings = Field(default_factory=CorsSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    streaming: StreamingSettings = Field(default_factory=StreamingSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.data_dir / 'streamforge.db').resolve().as_posix()}"


def get_settings() -> Settings:
    return Settings()
