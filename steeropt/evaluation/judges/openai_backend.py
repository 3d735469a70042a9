"""Judge through any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp server).

Retries are ours, not the client's (max_retries=0 on the client, so every retry is counted):
429, 5xx, timeouts and connection errors are retried with exponential backoff and jitter, and a
Retry-After header is honoured (capped by max_backoff_s). Other HTTP errors and malformed
responses make the result missing at once. At most `concurrency` requests are in flight.

The API key is read from the environment variable NAMED in the spec when the client is created
(once per `judge()` call); it is never stored on the judge, in the cache, in repr or in logs.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import logging
import os
import random
import time

from steeropt.errors import JudgeError
from steeropt.evaluation.judges.base import Judge, JudgeRequest
from steeropt.evaluation.judges.cache import JudgeCache
from steeropt.evaluation.judges.config import JudgeSpec
from steeropt.evaluation.judges.scoring import Rating, score_completion

log = logging.getLogger(__name__)
DEFAULT_BASE_URL = "https://api.openai.com/v1"


def retry_after_seconds(headers) -> float | None:
    """Seconds asked for by Retry-After / retry-after-ms, or None."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(ra)
            return max(0.0, when.timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class OpenAIJudge(Judge):
    backend = "openai"

    def __init__(self, spec: JudgeSpec, cache: JudgeCache | None):
        super().__init__(spec, cache)
        try:
            import openai  # noqa: F401
        except ImportError as e:
            raise JudgeError("the openai backend needs the `openai` package: pip install openai") from e
        self.base_url = (spec.base_url or DEFAULT_BASE_URL).rstrip("/")
        if spec.api_key_env and not os.environ.get(spec.api_key_env):  # fail at set-up, not in the first trial
            raise JudgeError(f"judge '{spec.name}': environment variable {spec.api_key_env} is not set "
                             f"(it should hold the API key for {self.base_url})")

    @property
    def identity(self) -> str:
        return f"openai:{self.spec.model}@{self.base_url}"

    def _client(self):
        from openai import AsyncOpenAI

        key = "no-key"  # local servers (llama.cpp, vLLM) accept any key
        if self.spec.api_key_env:
            key = os.environ.get(self.spec.api_key_env)
            if not key:
                raise JudgeError(f"judge '{self.spec.name}': environment variable {self.spec.api_key_env} "
                                 f"is not set (it should hold the API key for {self.base_url})")
        return AsyncOpenAI(base_url=self.base_url, api_key=key, max_retries=0, timeout=self.spec.timeout_s)

    def _rate(self, requests: list[JudgeRequest]) -> list[tuple[Rating, str | None]]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._rate_all(requests))
        # Called from inside an event loop (e.g. a notebook): run ours in a worker thread.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self._rate_all(requests)).result()

    async def _rate_all(self, requests):
        client = self._client()
        sem = asyncio.Semaphore(self.spec.concurrency)
        try:
            return await asyncio.gather(*(self._rate_one(client, sem, r) for r in requests))
        finally:
            await client.close()

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        wait = self.spec.backoff_s * (2 ** attempt) * random.uniform(0.5, 1.0)  # jitter spreads workers apart
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(wait, self.spec.max_backoff_s)

    async def _rate_one(self, client, sem, req: JudgeRequest) -> tuple[Rating, str | None]:
        import openai

        rubric = self.spec.rubrics[req.rubric]
        kwargs = dict(model=self.spec.model, messages=rubric.messages(req.prompt, req.response, req.concept),
                      max_tokens=rubric.max_tokens, temperature=self.spec.temperature)
        if rubric.use_logprobs and self.spec.top_logprobs > 0:
            kwargs.update(logprobs=True, top_logprobs=self.spec.top_logprobs)
        last = "no attempt"
        for attempt in range(self.spec.max_retries + 1):
            retry_after = None
            async with sem:
                self.stats.http_attempts += 1
                try:
                    resp = await asyncio.wait_for(client.chat.completions.create(**kwargs),
                                                  self.spec.timeout_s + 5)
                    return self._read(resp, rubric)
                except (openai.APITimeoutError, asyncio.TimeoutError):
                    last = f"timeout after {self.spec.timeout_s:g}s"
                except openai.APIConnectionError as e:  # includes truncated bodies, refused connections
                    last = f"connection error: {type(e.__cause__ or e).__name__}: {e.__cause__ or e}"
                except openai.APIStatusError as e:
                    if e.status_code != 429 and e.status_code < 500:
                        return Rating(None, None, f"HTTP {e.status_code}: {_short(e.message)}"), None
                    last = f"HTTP {e.status_code}: {_short(e.message)}"
                    retry_after = retry_after_seconds(e.response.headers)
                except openai.APIResponseValidationError as e:
                    return Rating(None, None, f"malformed response: {_short(str(e))}"), None
            if attempt == self.spec.max_retries:
                break
            self.stats.retries += 1
            wait = self._backoff(attempt, retry_after)
            log.info("judge %s: %s; retry %d in %.2fs", self.spec.name, last, attempt + 1, wait)
            await asyncio.sleep(wait)
        return Rating(None, None, f"gave up after {self.spec.max_retries + 1} attempts: {last}"), None

    @staticmethod
    def _read(resp, rubric) -> tuple[Rating, str | None]:
        choices = getattr(resp, "choices", None)
        if not choices:  # the client hands back plain text when the body is not JSON
            return Rating(None, None, f"malformed response: not a chat completion ({_short(str(resp))!r})"), None
        choice = choices[0]
        text = (choice.message.content if choice.message else None) or ""
        tokens = None
        content = getattr(choice.logprobs, "content", None) if choice.logprobs else None
        if content:
            tokens = [(t.token, [(a.token, a.logprob) for a in (t.top_logprobs or [])]) for t in content]
        rating = score_completion(text, tokens, rubric, cut_off=choice.finish_reason == "length")
        return rating, text


def _short(s: str, n: int = 200) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[:n] + "..."
