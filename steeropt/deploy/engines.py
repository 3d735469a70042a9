"""The engines parity runs a profile's export on: llama.cpp (llama-cpp-python, in-process, the GGUF with the
family's control vector) and the transformers deployment path (`apply_profile`). Each answers greedily and gives
next-token distributions on given tokens (deploy.parity compares them with the study's own path).
"""
from __future__ import annotations

import ctypes
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from steeropt.deploy.profiles import ProfileHandle
from steeropt.engine.threads import configure_threads
from steeropt.errors import SteeroptError


class ParityFailure(SteeroptError):
    """The engine does not match the reference within the stated tolerance (CLI exit code 1)."""

    exit_code = 1


# ---- llama.cpp -----------------------------------------------------------------------------------------
def load_control_vector(path, strength: float = 1.0) -> tuple[int, np.ndarray]:
    """(n_embd, data) exactly as llama.cpp's common_control_vector_load_one builds its buffer: tensor
    direction.N (N >= 1, float32, 1-D, one size for all) is added, times `strength`, at offset n_embd·(N−1).
    A file llama.cpp would skip raises ParityFailure with llama.cpp's reason."""
    import gguf

    try:
        r = gguf.GGUFReader(str(path))
    except Exception as exc:  # gguf raises many kinds on a truncated or foreign file
        raise ParityFailure(f"{path}: llama.cpp cannot read this control vector: {type(exc).__name__}: {exc}") from None
    n_embd, data = -1, np.zeros(0, dtype=np.float32)
    if not r.tensors:
        raise ParityFailure(f"{path}: no direction tensors (llama.cpp would load nothing)")
    for t in r.tensors:
        head, _, idx = t.name.partition(".")
        layer = int(idx) if head == "direction" and idx.isdigit() else -1
        if layer < 0:
            raise ParityFailure(f"{path}: tensor '{t.name}' has no parsable layer index; llama.cpp skips the file")
        if layer == 0:
            raise ParityFailure(f"{path}: direction.0 is invalid in llama.cpp (no control vector on layer 0)")
        if t.tensor_type != gguf.GGMLQuantizationType.F32 or len(t.shape) != 1:
            raise ParityFailure(f"{path}: '{t.name}' must be a 1-D float32 tensor for llama.cpp")
        if n_embd == -1:
            n_embd = int(t.n_elements)
        elif int(t.n_elements) != n_embd:
            raise ParityFailure(f"{path}: '{t.name}' has {t.n_elements} values, the others {n_embd}")
        if data.size < n_embd * layer:
            data = np.concatenate([data, np.zeros(n_embd * layer - data.size, dtype=np.float32)])
        data[n_embd * (layer - 1): n_embd * layer] += np.asarray(t.data, dtype=np.float32) * np.float32(strength)
    return n_embd, data


@contextmanager
def _safe_cpu_params(C):
    """llama.cpp's extra CPU buffer types (weight repacking / AMX) off while a model loads: on this machine's
    CPU the native build segfaults in libggml-cpu on the first decode with them on (tests/servers.py)."""
    orig = C.llama_model_default_params

    def params():
        p = orig()
        if hasattr(p, "use_extra_bufts"):
            p.use_extra_bufts = False
        return p

    C.llama_model_default_params = params
    try:
        yield
    finally:
        C.llama_model_default_params = orig


class LlamaCppEngine:
    """A GGUF model in llama.cpp (llama-cpp-python, in-process), steered by control vectors."""

    name = "llama.cpp"

    def __init__(self, gguf_path, *, n_ctx: int = 512, threads: int | None = None):
        try:
            import llama_cpp
            import llama_cpp.llama_cpp as C
        except ImportError:
            raise SteeroptError("the llama.cpp parity check needs llama-cpp-python: "
                                "pip install 'llama-cpp-python[server]' (or the test extras)") from None
        threads = threads or configure_threads()
        self.C = C
        with _safe_cpu_params(C):
            self.llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=n_ctx, logits_all=True, n_threads=threads,
                                       n_threads_batch=threads, verbose=False, seed=0)
        self.n_ctx = n_ctx
        self.n_embd = int(C.llama_model_n_embd(self.llm.model))
        self.n_layer = int(C.llama_model_n_layer(self.llm.model))
        self.files: dict[str, Path] = {}  # family -> control-vector file
        self.version = getattr(llama_cpp, "__version__", "?")

    def steer(self, family: str | None, scale: float | None) -> None:
        """The family's control vector at strength `scale` (scale None: no control vector at all)."""
        if family is None or scale is None:
            rc = self.C.llama_set_adapter_cvec(self.llm.ctx, None, 0, self.n_embd, -1, -1)
        else:
            n_embd, data = load_control_vector(self.files[family], scale)
            if n_embd != self.n_embd:
                raise ParityFailure(f"{self.files[family]}: vectors of size {n_embd}, the model's n_embd is {self.n_embd}")
            buf = np.ascontiguousarray(data, dtype=np.float32)
            self._buf = buf  # llama.cpp copies it, but keep it alive for the call
            ptr = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            rc = self.C.llama_set_adapter_cvec(self.llm.ctx, ptr, buf.size, n_embd, 1, self.n_layer)
        if rc != 0:
            raise ParityFailure(f"llama_set_adapter_cvec refused the control vector of {family} (code {rc})")

    def _eval(self, ids: list[int]) -> np.ndarray:
        if len(ids) > self.n_ctx:
            raise SteeroptError(f"{len(ids)} tokens exceed the llama.cpp context of {self.n_ctx}")
        self.llm.reset()
        self.llm.eval(ids)
        return self.llm.scores[: self.llm.n_tokens]

    def greedy(self, prompt_ids: list[int], max_new: int, eos: set[int]) -> tuple[list[int], list[float], bool]:
        self.llm.reset()
        self.llm.eval(list(prompt_ids))
        ids, lps = [], []
        for step in range(max_new):
            logits = torch.from_numpy(np.array(self.llm.scores[self.llm.n_tokens - 1], dtype=np.float32))
            t = int(torch.argmax(logits))
            ids.append(t)
            lps.append(float(torch.log_softmax(logits, -1)[t]))
            if t in eos:
                return ids, lps, True
            if step < max_new - 1:
                self.llm.eval([t])
        return ids, lps, False

    def dists(self, prompt_ids: list[int], target_ids: list[int]) -> torch.Tensor:
        """[T, V] log-softmax of the next-token distributions predicting each target token."""
        scores = self._eval(list(prompt_ids) + list(target_ids))
        p = len(prompt_ids)
        return torch.log_softmax(torch.from_numpy(np.array(scores[p - 1: p - 1 + len(target_ids)])).double(), -1)

    def close(self) -> None:
        self.llm.close()


class ProfileEngine:
    """The transformers deployment path: `apply_profile`'s hooks (one strength for the batch) + `generate`."""

    name = "transformers"

    def __init__(self, lm, profile):
        self.lm, self.profile, self.handle = lm, profile, None

    def steer(self, family: str | None, scale: float | None) -> None:
        if self.handle is not None:
            self.handle.remove()
        self.handle = None if family is None or scale is None else ProfileHandle(self.lm, self.profile, family, scale)

    @torch.no_grad()
    def greedy(self, prompt_ids, max_new, eos):
        ids = torch.tensor([list(prompt_ids)], device=self.lm.device)
        out = self.lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False,
                                     temperature=None, top_p=None, top_k=None, output_logits=True,
                                     return_dict_in_generate=True, pad_token_id=self.lm.tokenizer.pad_token_id)
        gen = out.sequences[0, ids.shape[1]:].tolist()
        stop = next((i for i, t in enumerate(gen) if t in eos), None)
        n = len(gen) if stop is None else stop + 1
        lps = [float(torch.log_softmax(out.logits[i][0].float(), -1)[gen[i]]) for i in range(n)]
        return gen[:n], lps, stop is not None

    @torch.no_grad()
    def dists(self, prompt_ids, target_ids):
        ids = torch.tensor([list(prompt_ids) + list(target_ids)], device=self.lm.device)
        logits = self.lm.model(input_ids=ids, use_cache=False).logits[0].double()
        p = len(prompt_ids)
        return torch.log_softmax(logits[p - 1: p - 1 + len(target_ids)], -1).cpu()

    def close(self) -> None:
        self.steer(None, None)
