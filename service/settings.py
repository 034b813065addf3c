"""All configuration in one place: a pydantic-settings class read from `MODX_*` variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from trainer.config import TrainConfig

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Every knob of the service; `MODX_<NAME>` in the environment overrides the default."""

    model_config = SettingsConfigDict(env_prefix="MODX_", extra="ignore", env_nested_delimiter="__")

    # where things live
    data_dir: Path = Path("data")
    log_dir: Path | None = Field(None, description="where modx up puts the roles' logs (default <data_dir>/logs)")
    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"

    # Kafka
    topic: str = "modx.pairs"
    dlq_topic: str = "modx.pairs.dlq"
    topic_partitions: int = Field(1, ge=1, description="partitions when modx creates the topics")
    topic_replication: int = Field(
        1, ge=1, description="replication factor when modx creates the topics: 1 on one broker, 3 on a real cluster"
    )
    consumer_group: str = "modx-consumer"
    consumer_poll_ms: int = Field(500, ge=10, description="longest wait of one poll; seal requests are seen this often")
    consumer_max_records: int = Field(256, ge=1, description="most messages handled (and fsynced) per batch")
    consumer_session_timeout_ms: int = Field(10_000, ge=1000)
    consumer_max_poll_interval_ms: int = Field(60_000, ge=1000, description="also the group's rebalance timeout")
    consumer_retry_cap_s: float = Field(10.0, gt=0, description="longest backoff of a consumer that cannot write")
    produce_timeout_s: float = Field(30.0, gt=0, description="how long a POST waits for Kafka's acks")

    # phases
    phase_size: int = Field(1000, ge=1, description="seal the open phase at this many pairs")
    phase_max_age_s: float = Field(24 * 3600.0, gt=0, description="seal a non-empty open phase this old")
    probe_fraction: float = Field(0.1, ge=0.0, le=1.0, description="held-out slice of every phase (hash of id)")
    seal_wait_s: float = Field(5.0, ge=0, description="how long POST /v1/phases/seal waits for the consumer")
    seal_min_interval_s: float = Field(
        5.0,
        ge=0,
        description="at most one new seal request this often (429 "
        "with Retry-After); a request while one is pending joins it",
    )

    # limits on posted pairs
    max_pairs_per_request: int = Field(256, ge=1)
    max_request_bytes: int = Field(64 * MiB, ge=1024, description="whole request body")
    max_image_bytes: int = Field(4 * MiB, ge=1)
    max_image_pixels: int = Field(4096 * 4096, ge=1, description="width*height, read from the header before decoding")
    max_text_chars: int = Field(1000, ge=1)
    max_metadata_bytes: int = Field(16 * 1024, ge=2, description="metadata as compact JSON")
    max_request_pixels: int = Field(
        64 * MiB,
        ge=1,
        description="width*height summed over one request's images, "
        "read from their headers before decoding: bounds the decoding CPU per request",
    )

    # write backpressure: POST /v1/pairs and /upload answer 429 with Retry-After, producing nothing
    max_consumer_lag: int | None = Field(
        100_000,
        ge=0,
        description="refuse writes while the consumer group is "
        "more messages than this behind the topic's end (None: never)",
    )
    min_free_bytes: int = Field(
        256 * MiB, ge=0, description="refuse writes while the data directory's filesystem has less free space than this"
    )
    lag_cache_s: float = Field(1.0, ge=0, description="how long one lag measure (two broker requests) is reused")
    write_retry_after_s: int = Field(5, ge=1, description="the Retry-After of a write refused by backpressure")

    # API keys and CORS (service/keys.py, service/auth.py)
    key_rate: float = Field(100.0, gt=0, description="requests/s of a key created without its own --rate")
    key_burst_s: float = Field(1.0, gt=0, description="a key may burst rate * this many requests (at least 1)")
    key_sync_s: float = Field(
        10.0,
        gt=0,
        description="how often an API writes last-used times to keys.json and checks Redis's key cache against it",
    )
    cors_origins: list[str] = Field(
        [],
        description="browser origins allowed to call the API, as JSON "
        "(MODX_CORS_ORIGINS='[\"https://a.example\"]'); empty: CORS off",
    )

    # learning (used by the workers)
    model: str = "modx-tiny"
    pretrained: str | None = None
    device: str = Field("cpu", description="where the trainer trains and the API embeds queries (the recipe's device)")
    reindex: Literal["full", "keep"] = Field(
        "full", description="keep: never re-embed; search stays on the old index's snapshot"
    )
    seed: int = Field(0, description="seed of CLIP_0 and of the recipe")
    # the trainer worker's recipe: trainer.config.TrainConfig, whose defaults are the one default
    # recipe (`modx simulate` runs the same one). One field per variable: MODX_RECIPE__METHOD=modx,
    # MODX_RECIPE__ALPHA=5, MODX_RECIPE__REPLAY_FRACTION=1.0, ... (device and seed: MODX_DEVICE, MODX_SEED).
    recipe: TrainConfig = Field(default_factory=TrainConfig, description="the training recipe (trainer.config)")
    guard_max_drop: float | None = Field(
        None,
        description="reject a snapshot whose mean old-probe R@1 drops more "
        "than this below the serving one's (negative: demand that gain); None: off",
    )
    worker_poll_s: float = Field(1.0, gt=0)
    train_max_attempts: int = Field(
        5,
        ge=1,
        description="tries of a phase whose training fails (disk faults "
        "do not count: the phase waits until the disk takes writes again)",
    )
    train_retry_first_s: float = Field(5.0, gt=0, description="backoff before the second try, doubled after each")
    train_retry_cap_s: float = Field(300.0, gt=0, description="longest backoff between tries")

    # the indexer
    index_kind: Literal["auto", "flat", "ivf", "ivfpq", "hnsw"] = "auto"
    index_device: Literal["auto", "cpu", "gpu"] = Field(
        "auto",
        description="where the API searches: auto = FAISS "
        "GPU if built with it, exact torch search on a CUDA GPU, else CPU",
    )
    index_flat_max: int = Field(200_000, ge=1, description="auto: exact search up to this many vectors")
    index_poll_s: float = Field(1.0, gt=0, description="how often new pairs are embedded into a segment")
    search_threads: int = Field(
        1,
        ge=1,
        description="FAISS threads per search in the API: 1 keeps single-query "
        "latency low while requests run concurrently (more only helps big batches)",
    )
    serving_poll_s: float = Field(0.5, gt=0, description="how often the API looks for a new index or segment")
    embed_batch_size: int = Field(256, ge=1)
    embed_devices: list[str] = Field(
        [],
        description='the indexer re-embeds the gallery with one shard per device (e.g. ["cuda:0", "cuda:1"]), '
        "merged into one index; empty: one worker on `device`",
    )

    # operations: each role's Prometheus port (0: off), logs, the dashboard's timeline
    metrics_host: str = Field("0.0.0.0", description="where the roles' metrics ports listen")
    api_metrics_port: int = Field(9100, ge=0, le=65535, description="the API's /metrics without a key (0: off)")
    consumer_metrics_port: int = Field(9101, ge=0, le=65535)
    trainer_metrics_port: int = Field(9102, ge=0, le=65535)
    indexer_metrics_port: int = Field(9103, ge=0, le=65535)
    log_format: Literal["auto", "json", "text"] = Field(
        "auto", description="auto: readable text on a terminal, JSON lines otherwise"
    )
    timeline_interval_s: float = Field(2.0, gt=0, description="how often the API samples ingest, lag and phase fill")
    timeline_window_s: float = Field(600.0, gt=0, description="how much of that timeline the API keeps")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (from the environment); tests pass their own instead."""
    return Settings()
