"""Micro-batching for the steered endpoint: requests that arrive within `wait_ms` of each other are generated
in one `generate` call, each row with its own plan (`steer(lm, vectors, plans, row_plan)`).

One worker thread owns the model: routing (a forward pass) and generation never run concurrently, so the
steering hooks of a batch never see another batch's rows. A batch that fails (e.g. one request's `steer`
override drives activations to NaN) is retried row by row, so only the bad request fails.

Greedy rows are independent of each other mathematically; in practice the kernels change the last bits
with the batch shape, so a batched greedy answer equals the single-request answer token for token on most
rows and may diverge late on a near-tie (tests/deploy_tests measure it).
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from steeropt.engine import fastpath
from steeropt.errors import SteeroptError
from steeropt.types import InterventionPlan


@dataclass
class Job:
    """One chat completion to generate. `resolve(route)` turns the routing result into (plan, steering info)
    inside the worker thread; jobs that need no routing give `plan` directly."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    top_logprobs: int = 0  # how many alternatives per token (0: none)
    want_logprobs: bool = False  # the answer carries per-token logprobs
    plan: InterventionPlan | None = None
    route_text: str | None = None  # set: route this text first, then call resolve
    resolve: object = None
    steering: dict = field(default_factory=dict)
    future: Future = field(default_factory=Future)


@dataclass
class Output:
    token_ids: list[int]  # without the EOS token
    logprobs: list[float]
    top: list[list[tuple[int, float]]]  # per token: (id, logprob) alternatives, best first
    finished: bool  # stopped by EOS (else by max_tokens)
    steering: dict


class _Recorder:
    """Raw next-token log-probs per step: the chosen token's and the top-k alternatives (like
    engine.generation._ChosenLogprobs, which keeps only the chosen one)."""

    def __init__(self, k: int):
        self.k, self.prev, self.chosen, self.top = k, None, [], []

    def hook(self, _module, args, kwargs, output):
        ids = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else (args[0] if args else None)
        if self.prev is not None and ids is not None:
            self._take(ids[:, -1])
        logits = output.logits[:, -1].float()
        if not torch.isfinite(logits).all():
            raise SteeroptError("the steering drove the activations to NaN/Inf (lower the strength)")
        self.prev = torch.log_softmax(logits, dim=-1)
        if self.k:
            v, i = torch.topk(self.prev, self.k, dim=-1)
            self.top.append((i.cpu(), v.cpu()))

    def _take(self, chosen):
        self.chosen.append(self.prev.gather(-1, chosen.to(self.prev.device).view(-1, 1)).squeeze(-1).cpu())

    def finish(self, gen: torch.Tensor) -> torch.Tensor:
        self._take(gen[:, -1])
        return torch.stack(self.chosen, dim=1)[:, : gen.shape[1]]


def eos_ids(lm) -> set[int]:
    eos = lm.model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
    return ids | {lm.tokenizer.eos_token_id}


@torch.no_grad()
def generate_rows(lm, vectors, jobs: list[Job], seed: int = 0) -> list[Output]:
    """One generate call for `jobs` (same temperature / top_p / repetition penalty), row r steered by jobs[r].plan."""
    from steeropt.engine.interventions import steer

    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    width = max(len(j.prompt_ids) for j in jobs)
    ids = torch.full((len(jobs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(jobs), width), dtype=torch.long)
    for r, j in enumerate(jobs):  # left padding: every prompt ends at the same column
        ids[r, width - len(j.prompt_ids):] = torch.tensor(j.prompt_ids)
        mask[r, width - len(j.prompt_ids):] = 1
    plans, row_plan = [], []
    for j in jobs:
        plan = j.plan or InterventionPlan([], [])
        key = repr((plan.sites, plan.alphas))
        idx = next((i for i, p in enumerate(plans) if repr((p.sites, p.alphas)) == key), None)
        if idx is None:
            plans.append(plan)
            idx = len(plans) - 1
        row_plan.append(idx)
    j0 = jobs[0]
    kw = {"max_new_tokens": max(j.max_tokens for j in jobs), "repetition_penalty": j0.repetition_penalty}
    if j0.temperature > 0:
        kw |= {"do_sample": True, "temperature": j0.temperature, "top_p": j0.top_p}
    else:
        kw |= {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    rec = _Recorder(max(j.top_logprobs for j in jobs))
    torch.manual_seed(seed)
    handle = lm.model.register_forward_hook(rec.hook, with_kwargs=True)
    try:
        with steer(lm, vectors, plans, row_plan, prompt_len=width):
            seqs = lm.model.generate(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                                     pad_token_id=pad, **kw)
    finally:
        handle.remove()
    gen = seqs[:, width:].cpu()
    lps = rec.finish(gen)
    eos = eos_ids(lm)
    out = []
    for r, j in enumerate(jobs):
        row = gen[r].tolist()[: j.max_tokens]
        stop = next((i for i, t in enumerate(row) if t in eos), None)
        n = len(row) if stop is None else stop
        top = [list(zip(rec.top[s][0][r].tolist()[: j.top_logprobs], rec.top[s][1][r].tolist()[: j.top_logprobs]))
               for s in range(n)] if j.top_logprobs else [[] for _ in range(n)]
        out.append(Output(row[:n], lps[r, :n].tolist(), top, stop is not None, j.steering))
    return out


class MicroBatcher:
    """Collects jobs for up to `wait_ms` (or `max_batch` rows) and runs them in one worker thread.

    `router(texts) -> list` routes the texts of jobs that ask for it (in the worker thread, batched)."""

    def __init__(self, lm, vectors, *, router=None, max_batch: int = 32, wait_ms: float = 10.0):
        self.lm, self.vectors, self.router = lm, vectors, router
        fastpath.prepare(lm)  # packed weights (engine/fastpath.py); the Generator does the same to the model
        self.max_batch, self.wait_s = max_batch, wait_ms / 1000
        self.q: queue.Queue = queue.Queue()
        self.batches: list[int] = []  # rows per generate call, for tests and logs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="steeropt-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Future:
        if self._stop.is_set():
            raise SteeroptError("the server is shutting down")
        self.q.put(job)
        return job.future

    def close(self) -> None:
        self._stop.set()
        self.q.put(None)
        self._thread.join(timeout=30)

    def _collect(self) -> list[Job]:
        first = self.q.get()
        if first is None:
            return []
        batch, deadline = [first], time.monotonic() + self.wait_s
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                job = self.q.get(timeout=max(left, 0)) if left > 0 else self.q.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._stop.set()
                break
            batch.append(job)
        return batch

    def _loop(self) -> None:
        while not self._stop.is_set():
            batch = self._collect()
            if batch:
                self._run(batch)

    def _run(self, batch: list[Job]) -> None:
        try:
            todo = [j for j in batch if j.route_text is not None]
            routes = self.router([j.route_text for j in todo]) if todo else []
            for j, r in zip(todo, routes):
                j.plan, j.steering = j.resolve(r)
        except Exception as exc:  # routing failed: every job of the batch gets the error, the loop goes on
            for j in batch:
                j.future.set_exception(exc)
            return
        groups: dict[tuple, list[Job]] = {}
        for j in batch:
            groups.setdefault((j.temperature, j.top_p, j.repetition_penalty), []).append(j)
        for jobs in groups.values():
            self.batches.append(len(jobs))
            try:
                outs = generate_rows(self.lm, self.vectors, jobs)
            except Exception as exc:
                if len(jobs) == 1:
                    jobs[0].future.set_exception(exc)
                    continue
                outs = None
            if outs is not None:
                for j, o in zip(jobs, outs):
                    j.future.set_result(o)
                continue
            for j in jobs:  # isolate the row that broke the batch
                try:
                    j.future.set_result(generate_rows(self.lm, self.vectors, [j])[0])
                except Exception as exc:
                    j.future.set_exception(exc)
