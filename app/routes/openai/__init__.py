"""The OpenAI-compatible API, for the official `openai` clients and anything that speaks OpenAI's API.

    errors.py          OpenAI's error shape for every route here (OpenAIRoute), and the shared helpers
    names.py           the model names and voices this server answers to, and Whisper's languages
    transcriptions.py  POST /v1/audio/transcriptions, /v1/audio/translations (json, text, srt, vtt, verbose_json,
                       word timestamps, streamed transcripts)
    speech.py          POST /v1/audio/speech (mp3, opus, aac, flac, wav, pcm; streamed sentence by sentence)
    encode.py          PCM → those formats with PyAV, whole or as a stream
    models.py          GET /v1/models, /v1/models/{id}
    chat.py            POST /v1/chat/completions: answers from the knowledge base, through the consultation
                       pipeline's rag and llm stages and answer checks, recorded as consultation turns

The bearer key is one of our own JWTs (POST /v1/auth/token). No model library is imported here.
"""
