"""Does an objective's score agree with people? Score labelled (prompt, response) pairs exactly as a study
would (ObjectiveStack: tier-1 metrics, gates, judge) and compare with the labels.

Label file: one JSON object per line
    {"prompt": str, "response": str, "concept": str, "concept_description": str (optional),
     "labels": {"concept": 0|1|2, "coherency": 0|1|2, "relevance": 0|1|2}}     (any label may be absent)
`coherency` is the fluency axis. The older bench format (concept_band / coherence_band) is read too.

    items = read_labels("bench/judge_quality/labels/test.jsonl")
    recs = score_items(lm, objective_spec, items, judge)      # one stack record per item
    report = check_report(objective_spec, items, recs)        # {"axes": ..., "gates": ..., "cheap": ...}
"""
from __future__ import annotations

import difflib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from steeropt.engine.generation import Decoding, Generator
from steeropt.errors import SpecError, SteeroptError
from steeropt.evaluation.calibration import spearman_ci
from steeropt.evaluation.objectives import ObjectiveStack
from steeropt.evaluation.objectives.axes import AXES, LABEL_OF_AXIS, axis_score_names
from steeropt.evaluation.objectives.config import compare
from steeropt.evaluation.objectives.gates import gate_reasons
from steeropt.evaluation.objectives.tier1 import ConceptInfo
from steeropt.specs.concepts import builtin_concepts, load_concept
from steeropt.types import InterventionPlan, Sample

LABELS = ("concept", "coherency", "relevance")
# Cheap metrics reported against each axis, with the sign that makes "larger = better".
CHEAP = {"concept": [("keyword_hits", 1)],
         "fluency": [("fluency_proxy", 1), ("neutral_surprisal", -1), ("rep_3", -1), ("coherency_proxy", 1)],
         "relevance": [("relevance_pmi", 1), ("relevance_proxy", 1)]}


class LabelError(SpecError):
    """A label file is malformed: names the file and line, the field, and "did you mean".
    LabelError(message) alone is for labels that come from elsewhere (e.g. MLflow feedback)."""

    def __init__(self, file: str | None, field: str | None = None, message: str | None = None):
        if message is None:
            self.file, self.field, self.message = None, None, file
            SteeroptError.__init__(self, file)
        else:
            super().__init__(file, field, message)


@dataclass
class LabelItem:
    prompt: str
    response: str
    concept: str
    labels: dict[str, int]
    concept_description: str = ""
    line: int = 0
    extra: dict = field(default_factory=dict)


def read_labels(path: str | Path) -> list[LabelItem]:
    p = Path(path)
    if not p.is_file():
        raise LabelError(str(p), None, "label file not found")
    items = []
    for no, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue

        def bad(fld: str | None, msg: str, choices=(), got: str | None = None):
            close = difflib.get_close_matches(got, choices, n=1, cutoff=0.6) if got else []
            raise LabelError(f"{p}:{no}", fld, msg + (f"; did you mean {close[0]!r}?" if close else ""))

        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise LabelError(f"{p}:{no}", None, f"not valid JSON: {e.msg}") from None
        if not isinstance(d, dict):
            bad(None, f"expected a JSON object, got {type(d).__name__}")
        for k in ("prompt", "response", "concept"):
            if k not in d:  # a typo'd key: name the one it resembles
                typo = next((x for x in d if difflib.get_close_matches(x, [k], cutoff=0.6)), None)
                bad(k, "missing" + (f"; the line has {typo!r}: did you mean {k!r}?" if typo else ""))
            if not isinstance(d[k], str) or (k != "response" and not d[k].strip()):
                bad(k, f"expected a non-empty string, got {d[k]!r}")
        if "labels" not in d and ("concept_band" in d or "coherence_band" in d):  # older bench format
            d["labels"] = {k: d[b] for k, b in (("concept", "concept_band"), ("coherency", "coherence_band")) if b in d}
        labels = d.get("labels")
        if not isinstance(labels, dict):
            typo = next((x for x in d if x != "labels" and difflib.get_close_matches(x, ["labels"], cutoff=0.7)), None)
            bad("labels", "missing or not an object {concept, coherency, relevance}"
                + (f"; the line has {typo!r}: did you mean 'labels'?" if typo else ""))
        for k, v in labels.items():
            if k not in LABELS:
                hint = "; the fluency axis is labelled 'coherency'" if k == "fluency" else ""
                bad(f"labels.{k}", f"unknown label; known: {', '.join(LABELS)}{hint}", LABELS, k)
            if v is not None and (isinstance(v, bool) or v not in (0, 1, 2)):
                bad(f"labels.{k}", f"expected 0, 1 or 2, got {v!r}")
        desc = d.get("concept_description", "")
        if not isinstance(desc, str):
            bad("concept_description", f"expected a string, got {desc!r}")
        items.append(LabelItem(d["prompt"], d["response"], d["concept"],
                               {k: int(v) for k, v in labels.items() if v is not None}, desc, no,
                               {k: v for k, v in d.items() if k not in ("prompt", "response", "concept", "labels")}))
    if not items:
        raise LabelError(str(p), None, "no labelled items")
    return items


def concept_info(name: str, description: str = ""):
    """ConceptInfo for a label's concept; keywords from the built-in concept of that name (or its singular)."""
    known = builtin_concepts()
    for ref in (name, name.rstrip("s")):
        if ref in known:
            c = load_concept(ref)
            return ConceptInfo(name, description or c.description, list(c.keywords))
    return ConceptInfo(name, description or name)


def item_samples(lm, items: list[LabelItem]):
    """Samples as a study's generator makes them: rendered prompt ids and response ids. Labelled responses
    are real outputs cut at a token limit, so a sample is unfinished (no EOS, a tail loop counts as
    degenerate) unless the item says "finished": true (then EOS is appended, as generation keeps it)."""
    tok = lm.tokenizer
    out = []
    for it in items:
        finished = it.extra.get("finished") is True
        ids = tok(it.response, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if finished else [])
        out.append(Sample(prompt=it.prompt, family=it.concept, prompt_ids=tok(lm.render(it.prompt), add_special_tokens=False)["input_ids"],
                          token_ids=ids, text=it.response, logprobs=[], finished=finished, candidate=0, seed=0))
    return out


def baseline_for(lm, items: list[LabelItem], decoding=None):
    """The model's own unsteered answers to the labelled prompts: the reference of the drift / proxy metrics."""
    prompts = sorted({it.prompt for it in items})
    return Generator(lm).run([("baseline", p) for p in prompts], [InterventionPlan([], [])], decoding or Decoding(), seed=0)


def needs_baseline(spec, lm, judge=None) -> bool:
    """Whether scoring with `spec` reads a teacher-forced metric, whose reference is the model's own answers (else
    they are not generated: on a 1.5B model that is minutes)."""
    return ObjectiveStack(spec, lm, judge).tier1.teacher_forced


def score_items(lm, spec, items: list[LabelItem], judge=None, *, baseline=None, judge_all: bool = False) -> list[dict]:
    """One ObjectiveStack record per item, in order (one stack per concept: keywords and judge text differ).

    judge_all: judge filtered items too (an audit share of 1) so raw judge scores exist for every item.
    """
    if judge_all and spec.gates:
        spec = spec.model_copy(update={"audit": spec.audit.model_copy(update={"share": 1.0})})
    samples = item_samples(lm, items)
    recs: list[dict | None] = [None] * len(items)
    stacks = {}
    for name in sorted({it.concept for it in items}):
        idx = [i for i, it in enumerate(items) if it.concept == name]
        desc = next((items[i].concept_description for i in idx if items[i].concept_description), "")
        stacks[name] = (idx, ObjectiveStack(spec, lm, judge, concept_info(name, desc)))
    if baseline is None and any(st.tier1.teacher_forced for _, st in stacks.values()):
        baseline = baseline_for(lm, items)
    for name, (idx, stack) in stacks.items():
        [res] = stack.evaluate([samples[i] for i in idx], [InterventionPlan([], [])], baseline=baseline)
        for i, r in zip(idx, res.samples):
            recs[i] = r
    return recs  # type: ignore[return-value]


def _pairs(values: list, items: list[LabelItem], label: str, sign: float = 1.0) -> tuple[list, list]:
    xs, ys = [], []
    for v, it in zip(values, items):
        if v is not None and label in it.labels and np.isfinite(v):
            xs.append(sign * float(v))
            ys.append(it.labels[label])
    return xs, ys


def gate_figures(gates, metrics: list[dict], items: list[LabelItem], *, by_concept: bool = False) -> dict:
    """Per gate (and all gates together): precision and recall for "broken" (coherency label 0).
    by_concept: each entry also holds "per_concept": the same figures on each concept's items alone."""
    if by_concept:
        out = gate_figures(gates, metrics, items)
        for c in sorted({it.concept for it in items}):
            idx = [i for i, it in enumerate(items) if it.concept == c]
            for name, f in gate_figures(gates, [metrics[i] for i in idx], [items[i] for i in idx]).items():
                out[name].setdefault("per_concept", {})[c] = f
        return out
    out = {}
    groups = [(f"{g.metric}{g.op}{g.value:g}", [g]) for g in gates] + ([("any", list(gates))] if len(gates) > 1 else [])
    for name, gs in groups:
        fired = [bool(gate_reasons(m, gs)) for m in metrics]
        lab = [(f, it.labels["coherency"] == 0) for f, it in zip(fired, items) if "coherency" in it.labels]
        tp = sum(f and b for f, b in lab)
        fp = sum(f and not b for f, b in lab)
        fn = sum(b and not f for f, b in lab)
        out[name] = {"precision": tp / (tp + fp) if tp + fp else None, "recall": tp / (tp + fn) if tp + fn else None,
                     "fired": tp + fp, "broken": tp + fn, "n": len(lab)}
    return out


def check_report(spec, items: list[LabelItem], recs: list[dict]) -> dict:
    names = axis_score_names(spec)
    axes = {}
    for axis in AXES:
        name = names[axis]
        if name is None:
            axes[axis] = {"absent": True, "spearman": None, "ci": None, "n": 0}
            continue
        x, y = _pairs([r["scores"].get(name) for r in recs], items, LABEL_OF_AXIS[axis])
        axes[axis] = {"score": name, "source": spec.scores[name].model_dump(exclude_none=True), **spearman_ci(x, y)}
    cheap = {}
    for axis, feats in CHEAP.items():
        for metric, sign in feats:
            x, y = _pairs([r["metrics"].get(metric) for r in recs], items, LABEL_OF_AXIS[axis], sign)
            cheap[f"{'-' if sign < 0 else ''}{metric}"] = {"axis": axis, **spearman_ci(x, y)}
    return {"objective": spec.name, "judge": spec.judge, "n_items": len(items), "axes": axes,
            "gates": gate_figures(spec.gates, [r["metrics"] for r in recs], items, by_concept=True), "cheap": cheap,
            "filtered": sum(r["filtered"] for r in recs),
            "missing": sum(bool(r["missing"]) for r in recs),
            "missing_reasons": dict(Counter(x for r in recs for x in r["missing"].values()))}


def choose_threshold(values: list[float | None], broken: list[bool], op: str, min_precision: float = 0.9):
    """The gate threshold with the most recall at precision >= min_precision for "broken" (None if none).

    Candidates are midpoints between observed values; a sample whose metric is missing never fires."""
    xs = sorted({float(v) for v in values if v is not None})
    best = None
    for t in [(a + b) / 2 for a, b in zip(xs, xs[1:])]:
        fired = [v is not None and compare(float(v), op, t) for v in values]
        tp = sum(f and b for f, b in zip(fired, broken))
        fp = sum(f and not b for f, b in zip(fired, broken))
        if tp == 0 or tp / (tp + fp) < min_precision:
            continue
        rec = tp / max(1, sum(broken))
        if best is None or rec > best[1]:
            best = (t, rec)
    return None if best is None else best[0]
