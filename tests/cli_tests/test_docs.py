"""The docs say what the CLI and the API do: every `steeropt ...` command in README.md, docs/ and bench/README.md
exists with the options it is shown with, every `--option` the docs name exists somewhere (in steeropt or in the
other tool the line runs), the README keeps its shape, and its Python example runs on the embedded model."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import typer

from steeropt.cli import app

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
# options of the other tools the docs run (mlflow, llama.cpp, pip, the bench scripts, ...), by tool
OTHER_TOOLS = {
    "mlflow": {"--backend-store-uri", "--host", "--port", "--workers", "--artifacts-destination"},
    "llama-cli": {"--control-vector"},
    "pip": {"--no-deps"},
    "python": {"--sections", "--quick", "--judge-n", "--quickstart-plain", "--seeds", "--out", "--merge",
               "--spec", "--model", "--set", "--only", "--batches", "--keep-quickstart", "--packed", "--scalar"},
    "vllm": {"--port"},
    "chromium": set(),
}
OTHER_OPTIONS = set().union(*OTHER_TOOLS.values())


def _root():
    return typer.main.get_command(app)


def _options(cmd) -> set[str]:
    opts = {"--help", "-h"}
    for p in cmd.params:
        opts |= set(p.opts) | set(getattr(p, "secondary_opts", []))
    return opts


def _all_options(cmd) -> set[str]:
    opts = _options(cmd)
    for sub in getattr(cmd, "commands", {}).values():
        opts |= _all_options(sub)
    return opts


def _code(text: str) -> list[str]:
    """Every shell line of a page: fenced shell (or untagged) blocks line by line without their comments, then
    inline `code` spans. Python and YAML blocks are left out: `from steeropt import ...` is not a command."""
    lines = []
    for lang, block in re.findall(r"```([a-z]*)\n(.*?)```", text, re.S):
        if lang in ("", "bash", "sh", "console"):
            lines += [re.sub(r"\s#.*", "", ln) for ln in block.splitlines()]
    prose = re.sub(r"```[a-z]*\n.*?```", "", text, flags=re.S)
    lines += re.findall(r"`([^`\n]+)`", prose)
    return lines


def invocations(text: str) -> list[list[str]]:
    """The argument lists of every `steeropt ...` call shown on a page (placeholder calls left out)."""
    calls = []
    for line in _code(text):
        line = line.replace("\\|", "|")
        for m in re.finditer(r"(?:^|[\s(/])steeropt ((?:[^#|;&`)]|\|(?=[^ ]))+)", line):
            chunk = re.sub(r"[\[\]]", " ", m.group(1)).replace("|", " ")
            try:
                words = shlex.split(chunk)
            except ValueError:  # an unbalanced quote in a table cell: split plainly
                words = chunk.split()
            if words:
                calls.append(words)
    return calls


def check_call(root, words: list[str]) -> str | None:
    """None when the call names a real command and only its options; else what is wrong."""
    cmd, i = root, 0
    while i < len(words) and words[i].startswith("-"):  # global options: --threads N, --verbose
        if words[i] not in _options(root):
            return f"unknown global option {words[i]}"
        i += 2 if words[i] == "--threads" else 1
    while i < len(words) and hasattr(cmd, "commands"):
        name = words[i]
        if name.isupper() or name in ("...", "…"):
            return None  # a placeholder such as `steeropt COMMAND --help`
        if name not in cmd.commands:
            return f"unknown command {' '.join(words[:i + 1])!r}"
        cmd, i = cmd.commands[name], i + 1
    known = _options(cmd)
    for w in words[i:]:
        opt = w.split("=", 1)[0]
        if opt.startswith("--") and len(opt) > 2 and opt not in known:
            return f"{cmd.name}: unknown option {opt}"
    return None


def test_every_command_and_option_in_the_docs_exists():
    root = _root()
    assert len(PAGES) >= 9, PAGES
    problems, seen = [], 0
    for page in PAGES:
        for words in invocations(page.read_text(encoding="utf-8")):
            seen += 1
            why = check_call(root, words)
            if why:
                problems.append(f"{page.relative_to(ROOT)}: steeropt {' '.join(words)} -> {why}")
    assert seen > 60, seen  # the pages do show the commands
    assert not problems, "\n".join(problems)


def test_every_option_named_in_prose_exists():
    everything = _all_options(_root()) | OTHER_OPTIONS
    problems, named = [], set()
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for opt in sorted(set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", text))):
            named.add(opt)
            if opt not in everything:
                problems.append(f"{page.relative_to(ROOT)}: {opt}")
    assert len(named) > 40, named
    assert not problems, "options the docs name that no command has:\n" + "\n".join(problems)


def test_the_check_catches_a_wrong_command_and_option():
    root = _root()
    assert check_call(root, ["new", "study", "x", "--from-sweep"]) is None
    assert check_call(root, ["--threads", "1", "worker", "s.yaml"]) is None
    assert "unknown option --from-swep" in check_call(root, ["new", "study", "x", "--from-swep"])
    assert "unknown command" in check_call(root, ["pik", "s.yaml"])
    assert invocations("run `steeropt pick q --json` or\n```bash\nsteeropt run q --trials 4   # c\n```") == [
        ["run", "q", "--trials", "4"], ["pick", "q", "--json"]]


def test_readme_shape():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.encode()) <= 15_000
    heads = re.findall(r"^## (.+)$", text, re.M)
    order = ["Set-up", "What the quickstart shows", "Your own concept", "Python", "The main commands"]
    at = [next(i for i, h in enumerate(heads) if h.startswith(o)) for o in order]
    assert at == sorted(at), heads
    assert "bash scripts/quickstart.sh" in text and "bash scripts/test.sh" in text
    assert "docs/img/quickstart-dose-fits.png" in text and (ROOT / "docs/img/quickstart-dose-fits.png").is_file()
    for term in ("selection prompts", "held-out prompts", "τ", "hypervolume", "coherency"):
        assert term in text.split("## Your own concept")[0], term  # defined before the concept walk-through
    for page in PAGES:  # change history lives in git, not in the docs
        assert not re.search(r"\bissue \d+|\bpreviously\b", page.read_text(encoding="utf-8")), page
    for link in re.findall(r"\]\(((?:docs|bench)/[^)#]+)", text):
        assert (ROOT / link).exists(), link


def test_readme_python_example_runs(capsys):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Python\n\n```python\n(.*?)```", text, re.S).group(1)
    assert len(block.strip().splitlines()) <= 15
    exec(compile(block, "README.md (Python example)", "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split(" ", 1)[0] for ln in lines[:3]] == ["0.0", "0.2", "0.4"]  # Sample.alpha, one per plan
    assert all(len(ln.split(" ", 1)[1]) > 10 for ln in lines[:3])  # real text at every strength
    assert len(" ".join(lines[3:]).split()) >= 5  # the steered plain-generate answer


def test_links_between_pages_resolve():
    bad = []
    for page in PAGES:
        for link in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            target = link.split("#", 1)[0]
            if target and not re.match(r"[a-z]+://", target) and not (page.parent / target).exists():
                bad.append(f"{page.relative_to(ROOT)}: {link}")
    assert not bad, bad
