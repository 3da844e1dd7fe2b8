"""Tiny random-weight models the test suite writes itself, to drive the real loading code of
llama-cpp-python (`llama_cpp.Llama` on a GGUF) and Coqui TTS (`TTS(model_path=, config_path=)`).

Both are deterministic (fixed seeds) and small (a GGUF of ~0.5 MB, a VITS of a few MB).
Run as a script to write them into a directory: `python -m tests.engines.tiny_models OUTDIR`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def write_tiny_gguf(
    path: Path, n_layer: int = 2, n_embd: int = 64, n_head: int = 4, n_ff: int = 128, seed: int = 0
) -> Path:
    """A random-weight llama GGUF with a byte-level SPM vocabulary and a chat template (MODELS.md)."""
    import gguf

    rng = np.random.default_rng(seed)
    tokens: list[bytes] = [b"<unk>", b"<s>", b"</s>"]
    scores: list[float] = [0.0, 0.0, 0.0]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>".encode())
        scores.append(0.0)
        types.append(gguf.TokenType.BYTE)
    tokens.append("▁".encode())
    scores.append(-1.0)
    types.append(gguf.TokenType.NORMAL)
    n_vocab = len(tokens)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("medvoice-tiny-test")
    w.add_context_length(512)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(CHATML_TEMPLATE)

    def t(name: str, *shape: int, scale: float = 0.02) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    def ones(name: str, n: int) -> None:
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    t("token_embd.weight", n_vocab, n_embd)
    ones("output_norm.weight", n_embd)
    t("output.weight", n_vocab, n_embd)
    for i in range(n_layer):
        ones(f"blk.{i}.attn_norm.weight", n_embd)
        t(f"blk.{i}.attn_q.weight", n_embd, n_embd)
        t(f"blk.{i}.attn_k.weight", n_embd, n_embd)
        t(f"blk.{i}.attn_v.weight", n_embd, n_embd)
        t(f"blk.{i}.attn_output.weight", n_embd, n_embd)
        ones(f"blk.{i}.ffn_norm.weight", n_embd)
        t(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        t(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        t(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_tiny_vits(directory: Path, seed: int = 0) -> tuple[Path, Path]:
    """A random-weight Coqui VITS (character input, no phonemizer): (model.pth, config.json).

    Vits.init_from_config is the constructor that also builds the tokenizer and audio processor."""
    import torch
    from TTS.config.shared_configs import BaseAudioConfig
    from TTS.tts.configs.vits_config import VitsArgs, VitsConfig
    from TTS.tts.models.vits import Vits
    from TTS.tts.utils.text.characters import CharactersConfig

    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    audio = BaseAudioConfig(
        sample_rate=16000,
        num_mels=40,
        fft_size=512,
        win_length=512,
        hop_length=128,
        mel_fmin=0,
        mel_fmax=None,
        do_trim_silence=False,
    )
    args = VitsArgs(
        hidden_channels=32,
        hidden_channels_ffn_text_encoder=64,
        num_heads_text_encoder=2,
        num_layers_text_encoder=1,
        kernel_size_text_encoder=3,
        resblock_kernel_sizes_decoder=[3],
        resblock_dilation_sizes_decoder=[[1, 3, 5]],
        upsample_rates_decoder=[8, 4, 4],
        upsample_initial_channel_decoder=32,
        upsample_kernel_sizes_decoder=[16, 8, 8],
        num_layers_flow=1,
        num_layers_posterior_encoder=1,
        spec_segment_size=16,
        out_channels=257,
        init_discriminator=False,
        use_sdp=False,
    )
    characters = CharactersConfig(
        characters_class="TTS.tts.utils.text.characters.Graphemes",
        pad="<PAD>",
        eos="<EOS>",
        bos="<BOS>",
        blank="<BLNK>",
        characters="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        punctuations="!'(),-.:;? ",
        phonemes=None,
        is_unique=True,
        is_sorted=True,
    )
    cfg = VitsConfig(
        audio=audio,
        model_args=args,
        use_phonemes=False,
        text_cleaner="basic_cleaners",
        characters=characters,
        add_blank=True,
        run_name="medvoice-tiny-vits",
    )
    model = Vits.init_from_config(cfg)
    model.eval()
    # A deterministic duration predictor (3 frames per input symbol at length_scale 1), so that speaking
    # rate settings have a measurable effect on the random-weight model.
    with torch.no_grad():
        model.duration_predictor.proj.weight.zero_()
        model.duration_predictor.proj.bias.fill_(float(np.log(3.0)))
    model_path, config_path = directory / "model.pth", directory / "config.json"
    torch.save({"model": model.state_dict(), "config": cfg.to_dict()}, model_path)
    cfg.save_json(str(config_path))
    return model_path, config_path


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-models")
    out.mkdir(parents=True, exist_ok=True)
    print(write_tiny_gguf(out / "tiny.gguf"))
    print(write_tiny_vits(out / "vits"))
