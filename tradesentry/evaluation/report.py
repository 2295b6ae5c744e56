"""Text of ``benchmarks/evaluation.md`` (the evaluate command rewrites it) and the console summary."""

from __future__ import annotations

import math
from typing import Any

from tradesentry.evaluation.metrics import SHARES, RankingReport
from tradesentry.evaluation.run import SampleResult

KINDS = (
    "undervaluation", "overvaluation", "misclassification", "weight_manipulation", "phantom_export",
    "subtle_undervaluation",
)  # fmt: skip
TARGETS = {"average_precision": 0.75, "recall_at_2pct_per_kind": 0.9, "explanations": 0.9}


def _f(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.3f}"


def ranking_table(reports: list[RankingReport]) -> list[str]:
    head = (
        "| ranking | "
        + " | ".join(f"P@{s:.0%}" for s in SHARES)
        + " | "
        + " | ".join(f"R@{s:.0%}" for s in SHARES)
        + " | average precision |"
    )
    lines = [head, "|---" * (2 + 2 * len(SHARES)) + "|"]
    for r in reports:
        lines.append(
            f"| {r.name} | "
            + " | ".join(_f(r.precision[s]) for s in SHARES)
            + " | "
            + " | ".join(_f(r.recall[s]) for s in SHARES)
            + f" | {_f(r.average_precision)} |"
        )
    return lines


def kind_table(reports: list[RankingReport], totals: dict[str, int]) -> list[str]:
    kinds = [k for k in KINDS if k in totals] + sorted(k for k in totals if k not in KINDS)
    lines = ["| kind (n) | " + " | ".join(r.name for r in reports) + " |", "|---" * (1 + len(reports)) + "|"]
    for k in kinds:
        cells = []
        for r in reports:
            found, total, rec = r.recall_by_kind.get(k, (0, totals[k], 0.0))
            cells.append(f"{_f(rec)} ({found}/{total})")
        lines.append(f"| {k} ({totals[k]}) | " + " | ".join(cells) + " |")
    return lines


def targets_met(res: SampleResult) -> dict[str, bool]:
    det = res.rankings[0]
    per_kind = [rec for _, _, rec in det.recall_by_kind.values()]
    return {
        "average precision >= 0.75": det.average_precision >= TARGETS["average_precision"],
        "recall at 2% >= 0.9 for every kind": bool(per_kind)
        and min(per_kind) >= TARGETS["recall_at_2pct_per_kind"],
        "first reason names the field >= 90%": res.explanations[2] >= TARGETS["explanations"],
    }


def sample_section(res: SampleResult) -> list[str]:
    s = res.spec
    det = res.rankings[0]
    ok, n, share = res.explanations
    out = [
        f"## Sample {s.name} ({s.role})",
        "",
        f"- generated: seed {s.seed}, scale {s.scale}, anomaly proportions `{s.proportions}`, "
        f"{s.nights} nights {s.first} .. {s.last}",
        f"- evaluated: nights {s.eval_first} .. {s.last} (the first {s.warmup} nights only build history), "
        f"{res.rows} declarations (about {res.declarations_per_night:.0f} a night), {res.positives} injected "
        f"anomalies ({res.positives / max(res.rows, 1):.2%}); {res.excluded_phantoms} phantom exports whose "
        f"transit window had not elapsed by {s.last} left out; {res.truth_missing} labelled anomalies of these "
        "nights not in `fct_declarations` (quarantined or held)",
        f"- detection: {res.detect_seconds.get('nights', 0)} nights scored in "
        f"{res.detect_seconds.get('seconds', 0):.1f} s ({res.detect_seconds.get('per_night', 0):.2f} s a night)",
        "",
        "Precision (P) and recall (R) at 1%, 2%, 5% of the evaluated declarations, and average precision:",
        "",
        *ranking_table(res.rankings),
        "",
        "Recall at 2% by injected kind (found / total):",
        "",
        *kind_table(res.rankings, res.by_kind_total),
        "",
        f"Explanations: the first reason names the manipulated field for {ok} of {n} detected anomalies "
        f"({_f(share)}); by kind: "
        + ", ".join(f"{k} {a}/{b}" for k, (a, b) in res.explanations_by_kind.items()),
        "",
        "Targets: "
        + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in targets_met(res).items())
        + f" (average precision {_f(det.average_precision)})",
        "",
    ]
    if res.feedback:
        fb0 = res.feedback[0]
        out += [
            f"Learning from analysts: decisions simulated on the anomaly tables of nights {s.eval_first} .. "
            f"the night before {fb0['first']} (top of each night's queue, then {fb0.get('audit_share', 0.1):.0%} "
            f"random audit picks; outcome from the ground truth; a budget larger than the queues gives fewer "
            f"decisions), nights {fb0['first']} .. {fb0['last']} rescored with them. The last column is what "
            f"the last night learned (`tradesentry.detection.feedback`): the classifier's out-of-fold skill "
            f"over the unsupervised ranking on the labelled rows (0: no better) and the weight its term got.",
            "",
            "| decisions (confirmed / dismissed) | "
            + " | ".join(f"P@{x:.0%}" for x in SHARES)
            + " | average precision | lowest recall at 2% by kind | learned: skill, weight |",
            "|---" * (4 + len(SHARES)) + "|",
        ]
        for row in res.feedback:
            r: RankingReport = row["report"]
            low = min(((rec, k) for k, (_, _, rec) in r.recall_by_kind.items()), default=(float("nan"), ""))
            learned = row.get("learned") or {}
            model = (
                f"{_f(float(learned['skill']))}, {_f(float(learned['weight']))}"
                if "skill" in learned
                else "no model"
            )
            out.append(
                f"| {row['decisions']} ({row['confirmed']} / {row['dismissed']}) | "
                + " | ".join(_f(r.precision[x]) for x in SHARES)
                + f" | {_f(r.average_precision)} | {_f(low[0])} ({low[1]}) | {model} |"
            )
        out.append("")
    return out


def markdown(results: list[SampleResult], meta: dict[str, Any]) -> str:
    lines = [
        "# Evaluation of the anomaly ranking",
        "",
        "Written by `tradesentry evaluate` (do not edit by hand; rerun the command). Synthetic data from",
        "`tradesentry.samplegen`: the labels are the generator's ground truth. Detection was tuned on",
        "sample A; sample B (other seed, scale and anomaly proportions) is held back and only reported.",
        "",
        "How it is judged (`tradesentry/evaluation/`): one row per declaration of the evaluated nights with",
        "its highest score over those nights (as `tradesentry export-scores` gives it), ranked by score",
        "(ties by key). Precision at k% = injected anomalies among the top ceil(k% x n); average",
        "precision over the whole ranking. Legitimate oddities (free samples, returns) count as normal.",
        "A phantom export counts once, and only when its transit window has elapsed by the last",
        "evaluated night. Baselines in the same run: a seeded random score, and the robust z of the",
        "log unit value (USD/kg) within HS6 (median, 1.4826 x MAD over the whole sample).",
        "",
        f"Run: {meta.get('when', '')}; detector version `{meta.get('detector_version', '')}`.",
        "",
    ]
    for res in results:
        lines += sample_section(res)
    lines += ["## Settings", "", "```"]
    for k, v in meta.get("config", {}).items():
        lines.append(f"{k} = {v}")
    lines += ["```", ""]
    return "\n".join(lines)


def console(res: SampleResult) -> str:
    return "\n".join(sample_section(res))
