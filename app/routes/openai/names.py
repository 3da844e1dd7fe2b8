"""The names this server answers to: its models (with OpenAI's common names as aliases), voices, languages.

Every OpenAI name of a kind means the one model of that kind this deployment serves:
- speech to text: `medvoice-asr` (the configured Whisper); `whisper-1`, `gpt-4o-transcribe`,
  `gpt-4o-mini-transcribe` are aliases;
- text to speech: `medvoice-tts` (the configured voice); `tts-1`, `tts-1-hd`, `gpt-4o-mini-tts`;
- chat: `medvoice-chat` (the configured GGUF LLM behind the knowledge base's answer checks); `gpt-4o-mini`,
  `gpt-4o`, `gpt-4.1-mini`, `gpt-4.1`, `gpt-3.5-turbo`;
- embeddings: `medvoice-embed` (the knowledge base's embedder; listed, not served over this API).
Any other name is a 400 `model_not_found` (404 on GET /v1/models/{id}).
"""

from __future__ import annotations

from dataclasses import dataclass

from workers.core.settings import Settings


@dataclass(frozen=True)
class ServedModel:
    id: str
    role: str  # asr | tts | chat | embed
    aliases: tuple[str, ...]


ASR = ServedModel("medvoice-asr", "asr", ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"))
TTS = ServedModel("medvoice-tts", "tts", ("tts-1", "tts-1-hd", "gpt-4o-mini-tts"))
CHAT = ServedModel("medvoice-chat", "chat", ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1", "gpt-3.5-turbo"))
EMBED = ServedModel("medvoice-embed", "embed", ())
SERVED = (ASR, TTS, CHAT, EMBED)

TRANSCRIPTION_MODELS = (*ASR.aliases, ASR.id)
SPEECH_MODELS = (*TTS.aliases, TTS.id)
CHAT_MODELS = (CHAT.id, *CHAT.aliases)


def served(name: str) -> ServedModel | None:
    """The model a name means (ours or an alias); None for a name this server does not serve."""
    return next((m for m in SERVED if name == m.id or name in m.aliases), None)


def underlying(model: ServedModel, settings: Settings) -> str:
    """What actually runs for the model, as a deployer would name it (file or directory, never a path)."""
    if model.role == "asr":
        return settings.asr_model_path.name if settings.asr_model_path else "whisper-base"
    if model.role == "chat":
        return settings.llm_model_path.name if settings.llm_model_path else "qwen2.5-coder-0.5b-instruct-q4_k_m"
    if model.role == "embed":
        return settings.kb_embedder_path or settings.kb_embedder
    return settings.tts_backend


# OpenAI's voice names: each speaks with this server's default voice in the text's language.
OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
    "default",
)

# Whisper's language codes and the names OpenAI's verbose_json reports (whisper/tokenizer.py).
LANGUAGES = {
    "en": "english",
    "zh": "chinese",
    "de": "german",
    "es": "spanish",
    "ru": "russian",
    "ko": "korean",
    "fr": "french",
    "ja": "japanese",
    "pt": "portuguese",
    "tr": "turkish",
    "pl": "polish",
    "ca": "catalan",
    "nl": "dutch",
    "ar": "arabic",
    "sv": "swedish",
    "it": "italian",
    "id": "indonesian",
    "hi": "hindi",
    "fi": "finnish",
    "vi": "vietnamese",
    "he": "hebrew",
    "uk": "ukrainian",
    "el": "greek",
    "ms": "malay",
    "cs": "czech",
    "ro": "romanian",
    "da": "danish",
    "hu": "hungarian",
    "ta": "tamil",
    "no": "norwegian",
    "th": "thai",
    "ur": "urdu",
    "hr": "croatian",
    "bg": "bulgarian",
    "lt": "lithuanian",
    "la": "latin",
    "mi": "maori",
    "ml": "malayalam",
    "cy": "welsh",
    "sk": "slovak",
    "te": "telugu",
    "fa": "persian",
    "lv": "latvian",
    "bn": "bengali",
    "sr": "serbian",
    "az": "azerbaijani",
    "sl": "slovenian",
    "kn": "kannada",
    "et": "estonian",
    "mk": "macedonian",
    "br": "breton",
    "eu": "basque",
    "is": "icelandic",
    "hy": "armenian",
    "ne": "nepali",
    "mn": "mongolian",
    "bs": "bosnian",
    "kk": "kazakh",
    "sq": "albanian",
    "sw": "swahili",
    "gl": "galician",
    "mr": "marathi",
    "pa": "punjabi",
    "si": "sinhala",
    "km": "khmer",
    "sn": "shona",
    "yo": "yoruba",
    "so": "somali",
    "af": "afrikaans",
    "oc": "occitan",
    "ka": "georgian",
    "be": "belarusian",
    "tg": "tajik",
    "sd": "sindhi",
    "gu": "gujarati",
    "am": "amharic",
    "yi": "yiddish",
    "lo": "lao",
    "uz": "uzbek",
    "fo": "faroese",
    "ht": "haitian creole",
    "ps": "pashto",
    "tk": "turkmen",
    "nn": "nynorsk",
    "mt": "maltese",
    "sa": "sanskrit",
    "lb": "luxembourgish",
    "my": "myanmar",
    "bo": "tibetan",
    "tl": "tagalog",
    "mg": "malagasy",
    "as": "assamese",
    "tt": "tatar",
    "haw": "hawaiian",
    "ln": "lingala",
    "ha": "hausa",
    "ba": "bashkir",
    "jw": "javanese",
    "su": "sundanese",
    "yue": "cantonese",
}
LANGUAGE_CODES = {name: code for code, name in LANGUAGES.items()}
