"""CLI commands `parity` and `serve`, registered on the steeropt app."""
from __future__ import annotations

import json
from typing import List, Optional

import typer

from steeropt.cli._app import app, console


@app.command()
def parity(profile: str = typer.Argument(..., help="profile directory (from steeropt pick)"),
           engine: str = typer.Option("llama.cpp", help="engine to check: llama.cpp or transformers (apply_profile)"),
           family: Optional[List[str]] = typer.Option(None, help="only these families (default: every deployable one)"),
           max_new_tokens: Optional[int] = typer.Option(None, min=1, help="shorter answers (default: the profile's)"),
           max_prompts: Optional[int] = typer.Option(None, min=1, help="only the first N held-out prompts per family"),
           as_json: bool = typer.Option(False, "--json", help="print the whole report as JSON")):
    """Run the exported setting on a serving engine and compare with the study's transformers reference on the
    held-out prompts; exit 1 outside the stated tolerance.

    \b
    Example:
      steeropt parity profiles/quickstart --max-prompts 4
    """
    from steeropt.deploy.parity import format_report, parity as run_parity

    rep = run_parity(profile, engine=engine, families=family or None, max_new_tokens=max_new_tokens,
                     max_prompts=max_prompts)
    if as_json:
        typer.echo(json.dumps(rep.to_dict(), indent=1, default=str))
    else:
        typer.echo(format_report(rep))
    if not rep.passed:
        console.print(f"[bold red]parity failed[/] on {rep.engine}: " + "; ".join(rep.failures), highlight=False)
        raise typer.Exit(1)


@app.command()
def serve(profile: str = typer.Argument(..., help="profile directory (from steeropt pick)"),
          host: str = typer.Option("127.0.0.1", help="address to listen on"),
          port: int = typer.Option(8000, min=1, max=65535),
          model: Optional[str] = typer.Option(None, help="model ref (default: the profile's model)"),
          max_batch: int = typer.Option(32, min=1, help="rows per generate call"),
          batch_wait_ms: float = typer.Option(10.0, min=0.0, help="how long to collect concurrent requests"),
          api_key: Optional[str] = typer.Option(None, help="require Authorization: Bearer <key> "
                                                "(default: $STEEROPT_SERVE_API_KEY; none: no key)"),
          allow_steer: bool = typer.Option(False, help="accept the request's `steer` override"),
          steer_range: Optional[str] = typer.Option(None, help="LOW,HIGH: the α a `steer` override may use "
                                                    "(default: the profile's searched range, else 0,1)"),
          max_steer_sites: int = typer.Option(8, min=1, help="sites one `steer` override may name"),
          max_queue: int = typer.Option(64, min=1, help="requests waiting at most; more get 503 + Retry-After"),
          request_timeout: float = typer.Option(120.0, min=0.1, help="seconds per request; later: 504"),
          max_body_bytes: int = typer.Option(1_000_000, min=1024, help="largest request body (else 413)"),
          max_tokens_cap: int = typer.Option(512, min=1, help="largest max_tokens a request may ask for")):
    """An OpenAI-compatible /v1/chat/completions server applying the profile per request (routed family,
    or the request's `family` / `steer` fields).

    \b
    Example:
      steeropt serve profiles/quickstart --port 8000
    """
    from steeropt.errors import SteeroptError
    from steeropt.serve import run
    from steeropt.serve.app import Limits

    rng = None
    if steer_range is not None:
        try:
            rng = tuple(float(x) for x in steer_range.split(","))
        except ValueError:
            rng = ()
        if len(rng) != 2 or not rng[0] <= rng[1]:
            raise SteeroptError(f"--steer-range must be LOW,HIGH with LOW <= HIGH, got {steer_range!r}")
    run(profile, host=host, port=port, model=model, max_batch=max_batch, wait_ms=batch_wait_ms, max_queue=max_queue,
        limits=Limits(max_tokens_cap=max_tokens_cap, max_body_bytes=max_body_bytes, request_timeout_s=request_timeout),
        api_key=api_key, allow_steer=allow_steer, steer_range=rng, max_steer_sites=max_steer_sites)
