"""The validation report (``report.html``): one offline page an assessor can read."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np

from .. import evidence as ev
from .._html import escape, page, png, table
from .._version import __version__
from ..evaluation.lr import tippett
from ..provenance import POPULATION_KEYS
from .result import ValidationResult
from .rules import LR_ELIMINATION_RULES, LR_IDENTIFICATION_RULES, _fmt_lr, _pct

#: Size (inches) of each figure of the report.
FIGSIZE = (5, 4.2)


def _figures(r: ValidationResult) -> list[tuple[str, str]]:
    """(caption, inline PNG) of each figure: ROC and DET curves, Tippett plot, CMC counts by truth."""
    same = np.array([p["same_gun"] for p in r.records])
    cmc = np.array([p["features"]["cmc"] for p in r.records])
    return [
        ("ROC curves", _roc(r, r.log10_lr_cv, cmc, same)),
        ("DET curves", _det(r.log10_lr_cv, cmc, same)),
        ("Tippett plot", _tippett(r, r.log10_lr_cv, same)),
        ("CMC count distribution", _cmc_histogram(cmc, same)),
    ]


def _roc(r: ValidationResult, llr, cmc, same) -> str:
    import matplotlib.pyplot as plt

    from ..evaluation import roc_curve

    fig, ax = plt.subplots(figsize=FIGSIZE)
    for score, label in ((llr, f"cross-validated LR (AUC {r.auc_lr:.3f})"), (cmc, f"CMC count (AUC {r.auc_cmc:.3f})")):
        fpr, tpr, _ = roc_curve(score, same)
        ax.step(fpr, tpr, where="post", label=label)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.7, ls=":")
    ax.set_xlabel("false-positive rate (different-gun pairs called same)")
    ax.set_ylabel("true-positive rate (same-gun pairs called same)")
    ax.set_title(f"ROC ({r.n_same} same-gun, {r.n_different} different-gun pairs)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return png(fig, "ROC curves of the LR and the CMC count")


def _det(llr, cmc, same) -> str:
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    from ..evaluation import roc_curve

    fig, ax = plt.subplots(figsize=FIGSIZE)
    lo = 0.5 / max(int(same.sum()), int((~same).sum()))
    for score, label in ((llr, "cross-validated LR"), (cmc, "CMC count")):
        fpr, tpr, _ = roc_curve(score, same)
        fnr = 1 - tpr
        ax.plot(
            norm.ppf(np.clip(fpr, lo, 1 - lo)), norm.ppf(np.clip(fnr, lo, 1 - lo)), drawstyle="steps-post", label=label
        )
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95])
    ticks = ticks[ticks >= lo / 2]
    ax.set_xticks(norm.ppf(ticks), [f"{100 * t:g}%" for t in ticks], fontsize=8)
    ax.set_yticks(norm.ppf(ticks), [f"{100 * t:g}%" for t in ticks], fontsize=8)
    ax.set_xlabel("false-positive rate (probit scale)")
    ax.set_ylabel("false-negative rate (probit scale)")
    ax.set_title("DET (rates of 0 drawn at half a pair)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png(fig, "DET curves of the LR and the CMC count")


def _tippett(r: ValidationResult, llr, same) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=FIGSIZE)
    tippett(llr, same, ax=ax, title=f"Tippett plot, cross-validated by gun: Cllr {r.cllr:.3f} (min {r.cllr_min:.3f})")
    for t in LR_IDENTIFICATION_RULES + LR_ELIMINATION_RULES:
        ax.axvline(math.log10(t), color="#999", lw=0.6, ls="--")
    return png(fig, "Tippett plot of the cross-validated LRs")


def _cmc_histogram(cmc, same) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.hist(
        [cmc[same], cmc[~same]],
        bins=np.arange(-0.5, max(cmc.max(), 12) + 1.5),
        label=[f"same gun (n={int(same.sum())})", f"different guns (n={int((~same).sum())})"],
        color=["tab:blue", "tab:red"],
        log=True,
    )
    ax.set_xlabel("CMC count")
    ax.set_ylabel("pairs (log scale)")
    ax.set_title("CMC counts by truth", fontsize=10)
    ax.legend(fontsize=8)
    return png(fig, "histogram of CMC counts by truth")


def _ci(lo_hi) -> str:
    return f"{_pct(lo_hi[0])} to {_pct(lo_hi[1])}"


def _rules_table(rows: list[dict]) -> str:
    out = []
    for r in rows:
        ident = r["kind"] == "identification"
        out.append(
            {
                "decision": r["kind"],
                "rule": r["rule"],
                "same-gun pairs called": f"{r['same_called']} / {r['n_same']}",
                "rate (same gun)": _pct(r["rate_same"]),
                "95% CI (same gun)": _ci(r["ci95_same"]),
                "different-gun pairs called": f"{r['different_called']} / {r['n_different']}",
                "rate (different guns)": _pct(r["rate_different"]),
                "95% CI (different guns)": _ci(r["ci95_different"]),
                "errors": (
                    f"{r['different_called']} false identification(s)"
                    if ident
                    else f"{r['same_called']} false elimination(s)"
                ),
            }
        )
    return table(out, cls="rules", num=("rate (same gun)", "rate (different guns)"))


def _box(rec: dict) -> str:
    """The class of the recommendation's box: a warning when no identification rule is supported."""
    return "box" if rec["identification"] else "box warn"


def _title(r: ValidationResult, doc: dict) -> str:
    """The title and the result in one box."""
    rec = r.recommendation
    P = []
    P.append(
        f"<h1>Validation of the ballistix comparison method on {r.n_scans} scans of {r.n_firearms} firearms</h1>"
        f"<p class='muted'>ballistix {escape(__version__)}; written {escape(doc['created_utc'])}; calibration "
        f"<code>{escape(r.calibration.name)}</code></p>"
    )
    P.append(
        f"<div class='{_box(rec)}' id='recommendation'><b>Result.</b> {escape(rec['text'])}<br>"
        f"Cross-validated Cllr <b id='cllr'>{r.cllr:.3f}</b> bits (Cllr-min {r.cllr_min:.3f}); "
        f"AUC of the LR <b id='auc-lr'>{r.auc_lr:.3f}</b>, of the CMC count {r.auc_cmc:.3f}; "
        f"{r.n_pairs} pairs ({r.n_same} same-gun, {r.n_different} different-gun).</div>"
    )
    return "".join(P)


def _what_was_tested(r: ValidationResult, doc: dict) -> str:
    """Section 1: the scans, firearms and population tested (and the scans left out)."""
    per_gun = Counter(i["firearm"] for i in r.inputs)
    pops = {i["firearm"]: i["population"] for i in r.inputs}
    P = []
    P.append("<h2>1. What was tested</h2>")
    P.append(
        f"<p>{r.n_scans} scans of cartridge cases fired in {r.n_firearms} firearms, whose firearm was known "
        f"(ground truth from the labels"
        + (
            f" file <code>{escape(Path(doc['labels']['path']).name)}</code>, SHA-256 "
            f"<code class='wrap'>{escape(doc['labels']['sha256'])}</code>"
            if doc.get("labels")
            else ""
        )
        + ").</p>"
    )
    P.append("<h3>Population (the domain the calibration is restricted to)</h3>")
    P.append(
        table(
            [
                {
                    "key": k.replace("_", "/"),
                    "values seen": r.domain.get(k)
                    if r.domain.get(k)
                    else "not recorded for every scan: not restricted",
                }
                for k in POPULATION_KEYS
            ]
        )
    )
    P.append("<h3>Firearms</h3>")
    P.append(
        table(
            [
                {"firearm": g, "scans": n, **{k.replace("_", "/"): (pops[g] or {}).get(k) for k in POPULATION_KEYS}}
                for g, n in sorted(per_gun.items())
            ],
            num=("scans",),
        )
    )
    P.append(
        "<details><summary>Scan files and their SHA-256 checksums</summary>"
        + table([{"file": i["name"], "firearm": i["firearm"], "sha256": i["sha256"]} for i in r.inputs], cls="wrap")
        + "</details>"
    )
    if r.excluded:
        P.append(
            f"<div class='box warn'><b>{len(r.excluded)} scan(s) could not be read and were left out:</b>"
            + table([{"file": x["name"], "firearm": x["firearm"], "reason": x["reason"]} for x in r.excluded])
            + "</div>"
        )
    return "".join(P)


def _how_it_was_tested(r: ValidationResult) -> str:
    """Section 2: the pairs, the method, the cross-validation and the parameters."""
    plan = r.pairs_plan
    P = []
    P.append("<h2>2. How it was tested</h2>")
    sample = (
        f"every same-gun pair ({plan['n_same']}) and a random sample of {plan['n_different']} of the "
        f"{plan['n_different_available']} different-gun pairs (seed {plan['seed']})"
        if plan["mode"] == "sample"
        else f"every pair of scans ({r.n_pairs})"
    )
    P.append(
        "<ol>"
        "<li>Each scan was preprocessed once: breech-face region found, form removed, outliers removed, "
        "Gaussian band-pass filtered and resampled (steps and parameters below).</li>"
        f"<li>{escape(sample[0].upper() + sample[1:])} was compared with the Congruent Matching Cells (CMC) method: "
        "the surface is cut into cells, each cell is searched for on the other surface over rotations and shifts, "
        "and the cells that agree on one rotation and shift are counted.</li>"
        f"<li>Features of each comparison ({escape(', '.join(ev.FEATURES))}) were turned into a likelihood ratio (LR) "
        "by logistic-regression calibration, bounded by the empirical lower and upper bounds (ELUB).</li>"
        f"<li><b>Cross-validation by gun</b>: the firearms were split into {r.parameters['n_folds']} folds "
        "(one firearm a fold when there are that few); the LR of a pair comes from a calibration fitted "
        "without any pair involving either of its firearms, so no firearm vouches for itself. All error rates "
        "of LR rules, the Tippett plot and Cllr below use these cross-validated LRs.</li>"
        "<li>Error rates are given with two-sided 95% Clopper-Pearson (exact binomial) confidence intervals; the "
        "recommendation uses the one-sided 95% upper bound.</li>"
        "<li>A final calibration was fitted on all pairs and written for casework use (section 5).</li></ol>"
    )
    P.append(
        "<details><summary>Preprocessing steps and comparison parameters</summary>"
        + table([{"step": s, "parameters": json.dumps(p, sort_keys=True)} for s, p in r.parameters["preprocessing"]])
        + table([{"parameter": k, "value": json.dumps(v, default=str)} for k, v in r.parameters["comparison"].items()])
        + "</details>"
    )
    return "".join(P)


def _results(r: ValidationResult) -> str:
    """Section 3: the decision rules' error rates, the summary measures and the figures."""
    P = []
    P.append("<h2>3. Results</h2>")
    P.append("<h3>Decision rules on the likelihood ratio (cross-validated)</h3>")
    P.append(
        "<p>Identification rules: the same-gun column is the share of same-gun pairs identified (higher is "
        "better), the different-gun column the false identifications (should be 0). Elimination rule: the "
        "same-gun column is the false eliminations (should be 0).</p>"
    )
    P.append(_rules_table(r.lr_rules))
    P.append("<h3>Rules on the CMC count (for comparison)</h3>")
    P.append(
        "<p>The count of congruent matching cells is a feature, not a calibrated rule; these rows show what "
        "the fixed count rules of the literature would have done on these scans.</p>"
    )
    P.append(_rules_table(r.cmc_rules))
    P.append("<h3>Summary measures</h3>")
    P.append(_summary_measures(r))
    P.append(_figure_gallery(r))
    return "".join(P)


def _summary_measures(r: ValidationResult) -> str:
    """The table of Cllr, AUC, EER, misleading evidence and the calibration's LR bounds."""
    m = r.misleading
    return table(
        [
            {
                "measure": "Cllr (cross-validated)",
                "value": f"{r.cllr:.4f} bits",
                "meaning": "cost of the LRs: 0 perfect, 1 no better than LR = 1 always",
            },
            {
                "measure": "Cllr-min",
                "value": f"{r.cllr_min:.4f} bits",
                "meaning": "what is left after the best monotone recalibration (discrimination); "
                "Cllr minus this is the calibration loss",
            },
            {
                "measure": "AUC, LR",
                "value": f"{r.auc_lr:.4f}",
                "meaning": "chance that a same-gun pair ranks above a different-gun pair",
            },
            {"measure": "AUC, CMC count", "value": f"{r.auc_cmc:.4f}", "meaning": "the same for the count"},
            {
                "measure": "EER, LR / CMC count",
                "value": f"{_pct(r.eer_lr)} / {_pct(r.eer_cmc)}",
                "meaning": "equal error rate",
            },
            {
                "measure": "different-gun pairs with LR > 1",
                "value": _pct(m["rate_for_same"]),
                "meaning": f"misleading towards same gun; {m['strong_for_same']} beyond LR {m['strong_lr']:g}",
            },
            {
                "measure": "same-gun pairs with LR < 1",
                "value": _pct(m["rate_for_different"]),
                "meaning": f"misleading towards different guns; {m['strong_for_different']} beyond LR "
                f"1/{m['strong_lr']:g}",
            },
            {
                "measure": "LR bounds of the calibration (ELUB)",
                "value": f"{10 ** r.calibration.bounds_log10[0]:.3g} to {10 ** r.calibration.bounds_log10[1]:.3g}",
                "meaning": "no LR beyond these is reported: the data could not support it",
            },
        ]
    )


def _figure_gallery(r: ValidationResult) -> str:
    """The figures (`_figures`), each with its caption."""
    return (
        "<div class='figs'>"
        + "".join(f"<figure>{img}<figcaption>{escape(cap)}</figcaption></figure>" for cap, img in _figures(r))
        + "</div>"
    )


def _recommended_rule(r: ValidationResult) -> str:
    """Section 4: the recommended rule, the pairs needed, the limits and an unrestricted domain."""
    rec = r.recommendation
    P = []
    P.append("<h2>4. Recommended rule and its limits</h2>")
    P.append(
        f"<p>Rule of this kit: recommend the smallest LR threshold (of "
        f"{escape(', '.join(_fmt_lr(t) for t in LR_IDENTIFICATION_RULES))}) at which no different-gun pair was "
        f"called identification and the one-sided 95% upper bound of the false-identification rate is below "
        f"the target {_pct(rec['fpr_target'])}, and that identifies at least one same-gun pair; elimination "
        f"likewise with the target {_pct(rec['elimination_target'])} for false eliminations.</p>"
    )
    P.append(f"<div class='{_box(rec)}'>{escape(rec['text'])}</div>")
    P.append(
        f"<p>With no error observed, the 95% upper bound of a rate is about 3/n: supporting a "
        f"false-identification rate below {_pct(rec['fpr_target'])} takes at least "
        f"{rec['different_pairs_needed']} different-gun pairs, and a false-elimination rate below "
        f"{_pct(rec['elimination_target'])} at least {rec['same_pairs_needed']} same-gun pairs.</p>"
    )
    P.append(
        "<p><b>Limits.</b> These rates hold for the population tested (section 1), the instrument and "
        "settings used, and scans of the quality of these. Pairs share scans and firearms, so they are not "
        f"independent: with {r.n_firearms} firearms the confidence intervals, which count pairs, are too "
        "narrow rather than too wide. Firearms of other makes, other ammunition, worn or cleaned guns, "
        "other scan quality or consecutively manufactured parts not represented here may behave differently. "
        "The rates describe the method, not an examiner, and not the probability that a given gun fired a "
        "given case.</p>"
    )

    open_keys = [k.replace("_", "/") for k in POPULATION_KEYS if not r.domain.get(k)]
    if open_keys:
        P.append(
            f"<p class='box warn'><b>Domain not restricted for {escape(', '.join(open_keys))}.</b> These were not "
            "recorded for every scan, so the calibration will accept scans of any value of them, including "
            "ones this validation never saw. Record them in the labels (columns calibre, make, model, "
            "instrument) and run the validation again to restrict it.</p>"
        )
    return "".join(P)


def _using_the_calibration(r: ValidationResult, doc: dict) -> str:
    """Section 5: how to register and use ``calibration.json``."""
    P = []
    P.append("<h2>5. Using the calibration file</h2>")
    P.append(
        f"<p><code>calibration.json</code> (SHA-256 <code class='wrap'>{escape(doc['calibration']['sha256'])}"
        f"</code>) holds the LR model fitted on all {r.n_pairs} pairs, its LR bounds, the preprocessing and "
        "comparison parameters it applies to, and its domain. It refuses comparisons made with other "
        "parameters, and scans outside its domain. A calibration file is used only once it is registered "
        "in the lab's case store (who, when, why and from what data are recorded there; a file's own "
        "checksum does not say who made it):</p>"
        '<pre>ballistix register-calibration --store DIR calibration.json --reason "validation report ..."\n'
        "ballistix compare A.x3p B.x3p --store DIR\n\n"
        "import ballistix as bx\n"
        "store = bx.CaseStore(DIR)\n"
        "res = bx.compare(bx.preprocess(bx.read_scan(a)), bx.preprocess(bx.read_scan(b)),\n"
        "                 calibration=store.calibrations())\n"
        'res.log10_lr, res.evidence["conclusion"]</pre>'
    )
    custom = [
        f"{what} {json.dumps(r.parameters[k], sort_keys=True)}"
        for k, what in (("preprocess_params", "preprocessed with"), ("compare_params", "compared with"))
        if r.parameters[k]
    ]
    if custom:
        P.append(
            f"<p>These scans were {escape(' and '.join(custom))} (other settings at their defaults): casework "
            "scans must be processed and compared the same way for the calibration to apply, e.g. "
            "<code>bx.preprocess(scan, **preprocess_params)</code> with the same values.</p>"
        )
    P.append(
        "<p>Every number in this report, every pair's features and cross-validated LR, and the checksums of "
        "the inputs are in <code>validation.json</code> beside this file.</p>"
    )
    return "".join(P)


def _report_html(r: ValidationResult, doc: dict) -> str:
    """The report (``report.html``) of a validation result and its JSON document (`document`)."""
    title = f"ballistix validation: {r.n_scans} scans, {r.n_firearms} firearms"
    sections = (
        _title(r, doc),
        _what_was_tested(r, doc),
        _how_it_was_tested(r),
        _results(r),
        _recommended_rule(r),
        _using_the_calibration(r, doc),
    )
    return page(title, "".join(sections))
