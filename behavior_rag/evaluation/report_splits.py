"""The time split beside the user split in one task report.

``behavior-rag eval --split time`` writes its own report into ``eval/reports/<task>/time/`` and
a section into the task's report (``eval/reports/<task>/report.md``) that puts both splits'
rows side by side; a later user-split run keeps that section while ``time/result.json`` exists.
The section sits between two HTML comments, so either run replaces it whole.

Example:
    >>> "## Time split" in "\\n".join(splits_section(user_result, time_result))  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
from pathlib import Path

from behavior_rag.atomic import replace_file
from behavior_rag.errors import StoreError
from behavior_rag.evaluation.methods import PRETTY
from behavior_rag.evaluation.result import EvalResult, MethodResult

BEGIN, END = "<!-- splits -->", "<!-- /splits -->"


def _ci(m: dict, key: str) -> str:
    v = m.get(key)
    if v is None:
        return "–"
    lo, hi = m.get(f"{key}_lo"), m.get(f"{key}_hi")
    return f"{v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "")


def _rate(res: EvalResult) -> str:
    rates = [r.metrics.get("base_rate") for r in res.results if r.metrics.get("base_rate")]
    return f"{rates[0]:.1%}" if rates else "–"


def splits_section(user: EvalResult, time: EvalResult) -> list[str]:
    """Markdown lines: both protocols and one table of the rows both runs have."""
    by_user = {r.method: r for r in user.results}
    rows: list[tuple[MethodResult | None, MethodResult]] = [
        (by_user.get(r.method), r) for r in time.results]
    cmd = f"behavior-rag eval --task {time.task} --split time --seed {time.config.seed} " \
          f"--methods {','.join(time.config.methods)}"
    left_out = [m for m in user.config.methods if m not in time.config.methods]
    lines = [BEGIN, "## Time split beside the user split", "",
             f"Train on earlier days, test on later ones: the protocol production implies "
             f"(`{cmd}`; full report in [time/report.md](time/report.md)).", "",
             f"- User split: {user.protocol}. Test {user.sizes['test']} sessions, base rate "
             f"{_rate(user)}.",
             f"- Time split: {time.protocol}. Sizes: train {time.sizes['train']}, validation "
             f"{time.sizes['val']}, test {time.sizes['test']}; test base rate {_rate(time)}.",
             "- Brackets: 95% bootstrap interval over the test sessions (1,000 resamples); "
             "where a column has none, its run predates them."]
    lines += _product_line(by_user.get("product"), next(
        (r for r in time.results if r.method == "product"), None))
    if left_out:
        lines.append(f"- Not in the time-split run: {', '.join(left_out)} (the rows that ask "
                     "the LLM take minutes per hundred sessions on this CPU box; the heads "
                     "and baselines answer the question the split asks).")
    lines += ["", "| method | user split auROC | user split auPR | time split auROC | "
              "time split auPR | time split f1_pos |", "|---|---|---|---|---|---|"]
    for u, t in rows:
        um = u.metrics if u else {}
        lines.append(f"| {PRETTY.get(t.method, t.method)} | {_ci(um, 'auroc')} | "
                     f"{_ci(um, 'aupr')} | {_ci(t.metrics, 'auroc')} | "
                     f"{_ci(t.metrics, 'aupr')} | {_ci(t.metrics, 'f1_pos')} |")
    return [*lines, END]


def _product_line(user: MethodResult | None, time: MethodResult | None) -> list[str]:
    """The product row's auROC on both splits (auPR moves with the base rate too)."""
    if user is None or time is None or time.metrics.get("auroc") is None:
        return []
    u, t = user.metrics["auroc"], time.metrics["auroc"]
    lo, hi = time.metrics.get("auroc_lo"), time.metrics.get("auroc_hi")
    inside = "" if lo is None or hi is None else (
        f"; the user split's value is {'inside' if lo <= u <= hi else 'outside'} the time "
        "split's interval")
    return [f"- The product row: auROC {u:.3f} on held-out users, {t:.3f} on later days "
            f"({t - u:+.3f}{inside}). auPR compares only with each split's own base rate."]


def read_result(path: Path) -> EvalResult | None:
    """A run's ``result.json``, or None when there is none (or it cannot be read)."""
    try:
        return EvalResult.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise StoreError(f"cannot read an evaluation result: {e}", file=str(path)) from e


def time_section_for(out: Path, res: EvalResult) -> list[str]:
    """The section a user-split report at ``out`` carries: when ``out/time`` holds a time
    split of the same task."""
    if res.config.split != "user":
        return []
    time = read_result(out / "time" / "result.json")
    return splits_section(res, time) if time is not None and time.task == res.task else []


def splice(report: Path, section: list[str]) -> bool:
    """Put ``section`` into ``report`` in place of the one there, else before its plots;
    False when there is no report."""
    if not report.is_file():
        return False
    text = report.read_text()
    block = "\n".join(section) + "\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block.rstrip("\n") + rest.split(END, 1)[1]
    elif "\n## Plots" in text:
        head, rest = text.split("\n## Plots", 1)
        text = head + "\n" + block + "\n## Plots" + rest
    else:
        text = text.rstrip("\n") + "\n\n" + block
    replace_file(report, text)
    return True


def link_time_split(out: Path, res: EvalResult) -> bool:
    """After a time-split run written to ``<task report>/time``: show it in the task report
    beside its user split. False when there is no user-split result there."""
    if res.config.split != "time" or out.name != "time":
        return False
    user = read_result(out.parent / "result.json")
    if user is None or user.task != res.task or user.config.split != "user":
        return False
    return splice(out.parent / "report.md", splits_section(user, res))
