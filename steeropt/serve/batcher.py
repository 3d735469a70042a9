"""Micro-batching for the steered endpoint: requests that arrive within `wait_ms` of each other are generated
in one `generate` call, each row with its own plan (`steer(lm, vectors, plans, row_plan)`).

One worker thread owns the model: routing (a forward pass) and generation never run concurrently, so the
steering hooks of a batch never see another batch's rows. Work is bounded: at most `max_queue` jobs wait
(`submit` raises Overloaded beyond), a job cancelled by its client or past its deadline is dropped before it
starts and its row stops at the next step once it runs. A row whose steering drives the logits to NaN/Inf is
stopped and failed alone within the same call; any other failure of a batch is narrowed down by halving it.

Greedy rows are independent of each other mathematically; in practice the kernels change the last bits
with the batch shape, so a batched greedy answer equals the single-request answer token for token on most
rows and may diverge late on a near-tie (tests/deploy_tests measure it).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from steeropt.engine import fastpath
from steeropt.engine.interventions import steer
from steeropt.errors import SteeroptError
from steeropt.types import InterventionPlan

log = logging.getLogger("steeropt.serve")


class Overloaded(SteeroptError):
    """The queue is full: the client should retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class Cancelled(SteeroptError):
    """The job was dropped: its client left or its deadline passed."""


@dataclass
class Job:
    """One chat completion to generate. `resolve(route)` turns the routing result into (plan, steering info)
    inside the worker thread; jobs that need no routing give `plan` directly.

    `cancelled` is set by the HTTP side (client gone, time limit); `on_tokens(ids)` (optional) is called from
    the worker thread with each newly chosen token of this row, for streaming."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    top_logprobs: int = 0  # how many alternatives per token (0: none)
    want_logprobs: bool = False  # the answer carries per-token logprobs
    stop: list[str] = field(default_factory=list)  # stop sequences (cut from the answer)
    plan: InterventionPlan | None = None
    route_text: str | None = None  # set: route this text first, then call resolve
    resolve: object = None
    steering: dict = field(default_factory=dict)
    stream: bool = False
    include_usage: bool = False
    on_token: object = None
    deadline: float | None = None  # time.monotonic() after which the row is stopped
    cancelled: threading.Event = field(default_factory=threading.Event)
    future: Future = field(default_factory=Future)

    def dropped(self) -> bool:
        return self.cancelled.is_set() or (self.deadline is not None and time.monotonic() > self.deadline)


@dataclass
class Output:
    token_ids: list[int]  # without the EOS token
    logprobs: list[float]
    top: list[list[tuple[int, float]]]  # per token: (id, logprob) alternatives, best first
    finished: bool  # stopped by EOS or a stop sequence (else by max_tokens)
    steering: dict
    text: str | None = None  # the answer's text when a stop sequence cut it


def _settle(job: Job, result=None, exc: BaseException | None = None) -> None:
    """Resolve a job's future unless its waiter gave up on it already."""
    try:
        job.future.set_exception(exc) if exc is not None else job.future.set_result(result)
    except InvalidStateError:
        pass


class _Recorder:
    """Raw next-token log-probs per step: the chosen token's and the top-k alternatives (like
    engine.generation._ChosenLogprobs, which keeps only the chosen one). Rows whose logits are not finite are
    recorded in `bad` and given neutral logits, so the rest of the batch goes on; `on_step(ids)` sees the
    tokens chosen at the previous step."""

    def __init__(self, k: int, on_step=None):
        self.k, self.prev, self.chosen, self.top, self.on_step = k, None, [], [], on_step
        self.bad: set[int] = set()

    def hook(self, _module, args, kwargs, output):
        ids = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else (args[0] if args else None)
        if self.prev is not None and ids is not None:
            self._take(ids[:, -1])
        logits = output.logits[:, -1].float()
        finite = torch.isfinite(logits).all(dim=-1)
        if not finite.all():
            rows = (~finite).nonzero().flatten()
            self.bad.update(rows.tolist())
            output.logits[rows, -1] = 0.0
            logits = output.logits[:, -1].float()
        self.prev = torch.log_softmax(logits, dim=-1)
        if self.k:
            v, i = torch.topk(self.prev, self.k, dim=-1)
            self.top.append((i.cpu(), v.cpu()))

    def _take(self, chosen):
        self.chosen.append(self.prev.gather(-1, chosen.to(self.prev.device).view(-1, 1)).squeeze(-1).cpu())
        if self.on_step is not None:
            self.on_step(chosen.tolist())

    def finish(self, gen: torch.Tensor) -> torch.Tensor:
        self._take(gen[:, -1])
        return torch.stack(self.chosen, dim=1)[:, : gen.shape[1]]


class _RowStop(StoppingCriteria):
    """Per-row stop: the row has its max_tokens, the job was dropped, its logits went non-finite, or its text
    hit a stop sequence. Generation ends when every row has stopped."""

    def __init__(self, tok, jobs: list[Job], width: int, rec: _Recorder):
        self.tok, self.jobs, self.width, self.rec = tok, jobs, width, rec
        self.tail = [max((len(s) for s in j.stop), default=0) + 4 for j in jobs]

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for r, j in enumerate(self.jobs):
            if r in self.rec.bad or j.dropped() or input_ids.shape[1] - self.width >= j.max_tokens:
                done[r] = True
            elif j.stop:
                text = self.tok.decode(input_ids[r, max(self.width, input_ids.shape[1] - self.tail[r]):].tolist())
                done[r] = any(s in text for s in j.stop)
        return done


def eos_ids(lm) -> set[int]:
    eos = lm.model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
    return ids | {lm.tokenizer.eos_token_id}


def cut_at_stop(tok, ids: list[int], stops: list[str]) -> tuple[int, str] | None:
    """(tokens kept, text) when the decoded `ids` contain a stop sequence: the text before the earliest one,
    and the tokens whose text lies wholly before it. None when no stop sequence occurs."""
    text = tok.decode(ids, skip_special_tokens=True)
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    if not hits:
        return None
    end = min(hits)
    n = 0
    while n < len(ids) and len(tok.decode(ids[: n + 1], skip_special_tokens=True)) <= end:
        n += 1
    return n, text[:end]


@torch.no_grad()
def generate_rows(lm, vectors, jobs: list[Job], seed: int = 0) -> list[Output | Exception]:
    """One generate call for `jobs` (same temperature / top_p / repetition penalty), row r steered by jobs[r].plan.
    A row whose logits went non-finite gets a SteeroptError in its place."""
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
    streaming = [(r, j.on_token) for r, j in enumerate(jobs) if j.on_token is not None]
    on_step = (lambda toks: [cb(toks[r]) for r, cb in streaming]) if streaming else None
    rec = _Recorder(max(j.top_logprobs for j in jobs), on_step)
    torch.manual_seed(seed)
    # steer() first: building its operations may run forward passes (the neutral norm of an unmeasured layer),
    # which the recorder must not see
    with steer(lm, vectors, plans, row_plan, prompt_len=width):
        handle = lm.model.register_forward_hook(rec.hook, with_kwargs=True)
        try:
            seqs = lm.model.generate(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                                     pad_token_id=pad, stopping_criteria=StoppingCriteriaList(
                                         [_RowStop(tok, jobs, width, rec)]), **kw)
        finally:
            handle.remove()
    gen = seqs[:, width:].cpu()
    lps = rec.finish(gen)
    eos = eos_ids(lm)
    out: list[Output | Exception] = []
    for r, j in enumerate(jobs):
        if r in rec.bad:
            out.append(SteeroptError("the steering drove the activations to NaN/Inf (lower the strength)"))
            continue
        row = gen[r].tolist()[: j.max_tokens]
        stop = next((i for i, t in enumerate(row) if t in eos), None)
        n = len(row) if stop is None else stop
        cut = cut_at_stop(tok, row[:n], j.stop) if j.stop else None
        text = None
        if cut is not None:
            (n, text), stop = cut, n
        top = [list(zip(rec.top[s][0][r].tolist()[: j.top_logprobs], rec.top[s][1][r].tolist()[: j.top_logprobs]))
               for s in range(n)] if j.top_logprobs else [[] for _ in range(n)]
        out.append(Output(row[:n], lps[r, :n].tolist(), top, stop is not None, j.steering, text))
    return out


class MicroBatcher:
    """Collects jobs for up to `wait_ms` (or `max_batch` rows) and runs them in one worker thread.

    `router(texts) -> list` routes the texts of jobs that ask for it (in the worker thread, batched).
    At most `max_queue` jobs wait for the worker; `submit` raises Overloaded beyond that."""

    def __init__(self, lm, vectors, *, router=None, max_batch: int = 32, wait_ms: float = 10.0,
                 max_queue: int = 64):
        self.lm, self.vectors, self.router = lm, vectors, router
        fastpath.prepare(lm)  # packed weights (engine/fastpath.py); the Generator does the same to the model
        self.max_batch, self.wait_s, self.max_queue = max_batch, wait_ms / 1000, max_queue
        self.q: queue.Queue = queue.Queue()
        self.batches: list[int] = []  # rows per generate call, for tests and logs
        self.dropped = 0  # jobs cancelled before or while they ran
        self.last_batch_s = 1.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="steeropt-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Future:
        if self._stop.is_set():
            raise SteeroptError("the server is shutting down")
        if self.q.qsize() >= self.max_queue:
            raise Overloaded(f"the server is busy ({self.max_queue} requests waiting); retry later",
                             retry_after=max(1, round(self.last_batch_s)))
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
        live = []
        for j in batch:
            if j.dropped():
                self.dropped += 1
                _settle(j, exc=Cancelled("dropped before it ran (client gone or time limit passed)"))
            else:
                live.append(j)
        return live

    def _loop(self) -> None:
        while not self._stop.is_set():
            batch = self._collect()
            if batch:
                t0 = time.monotonic()
                try:
                    self._run(batch)
                except Exception as exc:  # noqa: BLE001  (the worker must survive anything)
                    log.exception("batch of %d failed", len(batch))
                    for j in batch:
                        _settle(j, exc=exc)
                self.last_batch_s = time.monotonic() - t0

    def _run(self, batch: list[Job]) -> None:
        try:
            todo = [j for j in batch if j.route_text is not None]
            routes = self.router([j.route_text for j in todo]) if todo else []
            for j, r in zip(todo, routes):
                j.plan, j.steering = j.resolve(r)
        except Exception as exc:  # routing failed: every job of the batch gets the error, the loop goes on
            log.exception("routing failed")
            for j in batch:
                _settle(j, exc=exc)
            return
        groups: dict[tuple, list[Job]] = {}
        for j in batch:
            groups.setdefault((j.temperature, j.top_p, j.repetition_penalty), []).append(j)
        for jobs in groups.values():
            self._generate(jobs)

    def _generate(self, jobs: list[Job]) -> None:
        """Generate `jobs` in one call; if the call fails, each half again, down to the row that breaks it."""
        self.batches.append(len(jobs))
        try:
            outs = generate_rows(self.lm, self.vectors, jobs)
        except Exception as exc:  # noqa: BLE001
            if len(jobs) == 1:
                _settle(jobs[0], exc=exc)
                return
            half = len(jobs) // 2
            self._generate(jobs[:half])
            self._generate(jobs[half:])
            return
        for j, o in zip(jobs, outs):
            if j.dropped():  # its row was stopped early: the partial answer is not an answer (504, not 200)
                self.dropped += 1
                o = Cancelled("stopped while it ran (client gone or time limit passed)")
            _settle(j, exc=o) if isinstance(o, Exception) else _settle(j, o)
