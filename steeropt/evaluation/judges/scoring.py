"""Turning a judge's answer into a rating: logprob-weighted mean first, final-format parse second.

Two sources of a rating, in order of preference:
1. logprobs (persona_vectors): the probability-weighted mean over the valid rating tokens (the
   integers scale.min..scale.max), missing when they hold less than `min_valid_mass` of the mass.
2. the text: the LAST match of the rubric's `parse` regex (e.g. "Rating: [[2]]"), never the first
   digit anywhere.
Anything else is *missing* with a reason, never 0.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from steeropt.evaluation.judges.config import Rubric


@dataclass
class Rating:
    """What one judge answer says: a raw rating on the rubric's scale, or why there is none."""

    rating: float | None
    method: str | None  # "logprobs" | "parsed" | None (missing)
    missing: str | None = None
    valid_mass: float | None = None  # share of probability on valid rating tokens (logprobs only)


def as_int_rating(token: str, rubric: Rubric) -> int | None:
    """The integer a token stands for, if it is a valid rating on this rubric's scale."""
    t = token.strip()
    if not (t.isascii() and t.isdigit()) or (len(t) > 1 and t[0] == "0"):
        return None
    v = int(t)
    return v if rubric.scale.min <= v <= rubric.scale.max else None


def weighted_rating(dist: dict[int, float], rubric: Rubric) -> Rating:
    """Probability-weighted mean over valid ratings; dist maps rating -> probability (need not sum to 1)."""
    mass = sum(p for v, p in dist.items() if rubric.scale.min <= v <= rubric.scale.max)
    if mass < rubric.min_valid_mass or mass <= 0:
        return Rating(None, None, f"valid rating tokens hold {mass:.3f} of the probability mass "
                                  f"(< min_valid_mass {rubric.min_valid_mass})", mass)
    mean = sum(v * p for v, p in dist.items() if rubric.scale.min <= v <= rubric.scale.max) / mass
    return Rating(mean, "logprobs", None, mass)


def parse_rating(text: str, rubric: Rubric) -> tuple[Rating, re.Match | None]:
    """The LAST rating written in the required format, checked against the scale."""
    matches = list(re.finditer(rubric.parse, text or ""))
    if not matches:
        return Rating(None, None, f"no rating in the required format ({rubric.parse!r})"), None
    m = matches[-1]
    try:
        value = float(m.group(1))
    except (TypeError, ValueError):
        return Rating(None, None, f"rating {m.group(1)!r} is not a number"), m
    if not rubric.scale.min <= value <= rubric.scale.max:
        return Rating(None, None, f"rating {value:g} outside the scale {rubric.scale.min}..{rubric.scale.max}"), m
    return Rating(value, "parsed"), m


def normalise(rating: float, rubric: Rubric) -> float:
    """Raw rating -> [0, 1]."""
    lo, hi = rubric.scale.min, rubric.scale.max
    return min(1.0, max(0.0, (rating - lo) / (hi - lo)))


def score_completion(text: str, tokens: list[tuple[str, list[tuple[str, float]]]] | None, rubric: Rubric,
                     cut_off: bool = False) -> Rating:
    """Rate one chat completion.

    text: the generated message; tokens: per generated token (token text, [(alternative, logprob)]),
    i.e. the endpoint's top_logprobs, or None when it returned none; cut_off: generation stopped at max_tokens.
    """
    parsed, match = parse_rating(text, rubric)
    if rubric.use_logprobs and tokens:
        pos, note = _rating_position(text, tokens, match, rubric)
        if pos is not None:
            dist: dict[int, float] = {}
            for alt, lp in tokens[pos][1]:
                v = as_int_rating(alt, rubric)
                if v is not None:
                    dist[v] = dist.get(v, 0.0) + math.exp(lp)
            return weighted_rating(dist, rubric)
        if note and parsed.rating is not None and cut_off and match is not None and match.end(1) >= len(text.rstrip()):
            # e.g. "8" of "85" with max_tokens=1: neither the logprobs nor the text hold the rating
            return Rating(None, None, f"{note}; the answer was cut at max_tokens={rubric.max_tokens}, raise it")
    return parsed


def _rating_position(text: str, tokens, match: re.Match | None, rubric: Rubric) -> tuple[int | None, str | None]:
    """Index of the generated token whose top_logprobs describe the rating, or (None, why not)."""
    if rubric.logprob_position == "first":
        pos = 0
    else:
        if match is None:
            return None, None
        # token offsets in the concatenated token texts (equal to `text` for sane endpoints)
        joined = "".join(t for t, _ in tokens)
        if joined != text:
            m = list(re.finditer(rubric.parse, joined))
            if not m:
                return None, "token texts do not match the message"
            match = m[-1]
        start, off, pos = match.start(1), 0, None
        for i, (t, _) in enumerate(tokens):
            if off <= start < off + len(t):
                pos = i
                break
            off += len(t)
        if pos is None:
            return None, "rating token not found"
    if pos >= len(tokens):
        return None, "no generated tokens"
    # The distribution at `pos` is over complete ratings only if the rating fits in one token.
    tok = tokens[pos][0].strip()
    joined = "".join(t for t, _ in tokens)
    head = re.match(r"\s*(\d+)", joined[sum(len(t) for t, _ in tokens[:pos]):])
    if tok.isdigit() and head and len(head.group(1)) > len(tok):
        return None, "the tokenizer splits this rating into several tokens"
    alts = [as_int_rating(a, rubric) for a, _ in tokens[pos][1]]
    if rubric.scale.max >= 10 and tok.isdigit() and not any(v is not None and v >= 10 for v in alts):
        # No multi-digit rating among the alternatives: digits are separate tokens, and p("8")
        # would be read as a rating of 8 when the judge meant 80-89.
        return None, "the tokenizer splits multi-digit ratings into digits"
    return pos, None
