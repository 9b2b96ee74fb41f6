"""The ``ballistix`` command.

``ballistix demo`` runs the main job on built-in simulated casework;
``ballistix ingest | search | compare | link | report | check | confirm | decisions | imports`` work on a
case store;
``ballistix serve`` is the examiners' review app of one (a local web page);
``ballistix info FILE...`` reads scans and prints what is in them.
Errors print one line to stderr and exit with a non-zero code.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

from ._records import check_date, check_since, check_text, safe_text
from ._table import print_table as _print_table
from ._version import __version__
from .errors import BallistixError, ParameterError, ResolutionWarning

EXIT_BAD_INPUT = 2
#: An examiner's verdicts (`ballistix.store.casestore.VERDICTS`; named here so that building the
#: parser does not load the store).
VERDICTS = ("identification", "elimination", "inconclusive")


# ------------------------------------------------------------------ arguments
def _positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {safe_text(text)!r}")
    return v


def _non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0 (a seed)."""
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {safe_text(text)!r}")
    return v


def _port(text: str) -> int:
    """argparse type: a TCP port, 0 (any free one) to 65535."""
    try:
        v = int(text)
    except ValueError:
        v = -1
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port 0-65535, got {safe_text(text)!r}")
    return v


def _folds(text: str) -> int:
    """argparse type: folds of cross-validation, a whole number >= 2."""
    v = _positive_int(text)
    if v < 2:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 2, got {safe_text(text)!r}")
    return v


def _positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (0 < v < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {safe_text(text)!r}")
    return v


def _share(text: str) -> float:
    """argparse type: a share strictly between 0 and 1."""
    v = _positive_float(text)
    if not v < 1:
        raise argparse.ArgumentTypeError(f"must be a share between 0 and 1, got {safe_text(text)!r}")
    return v


def _likelihood_ratio(text: str) -> float:
    """argparse type: a likelihood ratio above 1."""
    v = _positive_float(text)
    if not v > 1:
        raise argparse.ArgumentTypeError(f"must be a likelihood ratio above 1, got {safe_text(text)!r}")
    return v


def _arg(check):
    """argparse type from a `ballistix._records` check (text, date): its ParameterError becomes
    argparse's error, which names the option."""

    def parse(text: str):
        try:
            return check(text, "the value")
        except ParameterError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


#: argparse types: text that can be recorded (valid UTF-8, no control characters, not blank), an
#: ISO 8601 date, an ISO 8601 date or time.
_text = _arg(lambda v, what: check_text(v, what, required=True))
_date = _arg(check_date)
_since = _arg(check_since)


# ------------------------------------------------------------------ messages
#: Advice in library messages (Python arguments) and what each command line has instead: the
#: option, its words, and the ``args`` attribute that tells whether the command has it. Advice
#: the command has no option for is dropped.
_ADVICE = [
    (
        re.compile(r"; pass units='m', 'mm' or 'um' (to read (?:it|both) as that unit anyway)"),
        "units",
        r"; use --units m, mm or um \1",
    ),
    (re.compile(r"; pass units='mm' or units='um'"), "units", "; use --units mm or --units um"),
    (re.compile(r" \(or units='(\w+)' (to read it as \w+)\)"), "units", r" (or --units \1 \2)"),
    (
        re.compile(r"; pass pixel_size_m \(metres per pixel\)"),
        "pixel_size_um",
        "; give it with --pixel-size-um (micrometres per pixel)",
    ),
    (re.compile(r" \(pass strict=False to read it anyway\)"), "lenient", " (use --lenient to read it anyway)"),
    (
        re.compile(r" \(pass skip_unreadable=True (to leave it out and list it)\)"),
        "skip_unreadable",
        r" (use --skip-unreadable \1)",
    ),
    (re.compile(r" \(pass region=None to preprocess to skip this step\)"), None, ""),
]


def _say(message, args=None) -> str:
    """A library message as the command line says it: advice about Python arguments becomes the
    command's option, or is dropped where the command has none; undecodable bytes shown as \\xff."""
    text = safe_text(message)
    for pattern, dest, cli in _ADVICE:
        text = pattern.sub(cli if dest is not None and hasattr(args, dest) else "", text)
    return text


@contextmanager
def _naming(*paths):
    """Errors from reading, preprocessing or comparing ``paths`` name them (the first one, or all
    when none is named already)."""
    try:
        yield
    except BallistixError as e:
        text = str(e)
        if not any(str(p) in text or Path(p).name in text for p in paths):
            where = str(paths[0]) if len(paths) == 1 else "comparing " + " with ".join(map(str, paths))
            raise ParameterError(f"{where}: {text}") from e
        raise


def _image_kw(args) -> dict:
    pixel = getattr(args, "pixel_size_um", None)
    return {} if pixel is None else {"pixel_size_m": pixel / 1e6}


def _scan_row(scan) -> dict:
    m = scan.meta
    return {
        "file": Path(m.get("source", "")).name,
        "shape": f"{scan.shape[0]}x{scan.shape[1]}",
        "spacing_um": round(scan.dx * 1e6, 4),
        "valid_%": round(100 * scan.valid_fraction, 1),
        "checksums": ",".join(sorted(set((m.get("x3p") or {}).get("checksums", {}).values()))) or "-",
        "sha256": m.get("sha256", "")[:12],
    }


def cmd_info(args) -> int:
    from .io import read_scan

    rows, failed = [], 0
    for path in args.files:
        suffix = Path(path).suffix.lower()
        kw = {"strict": not args.lenient} if suffix == ".x3p" else {}
        kw["units"] = args.units
        if suffix in (".png", ".tif", ".tiff") and args.pixel_size_um:
            kw["pixel_size_m"] = args.pixel_size_um / 1e6
        try:
            scan = read_scan(path, **kw)
        except BallistixError as e:
            print(f"error: {_say(e, args)}", file=sys.stderr)
            failed += 1
            continue
        rows.append(_scan_row(scan))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows)
    return EXIT_BAD_INPUT if failed else 0


def cmd_demo(args) -> int:
    """The whole story on simulated casework: write the exhibits as x3p and read them back,
    ingest them into a case store, compare a pair, search the store, link everything, and write
    the linkage graph and the HTML report."""
    from ._demo import print_demo, run_demo

    r = run_demo(args.out, firearms=args.firearms, scenes=args.scenes, seed=args.seed, resolution=args.resolution)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print_demo(r, seed=args.seed)
    return 0 if r["identical_after_roundtrip"] and r["checksums_verified"] and not r["ingest"]["failed"] else 1


def _store(args, *, create: bool = False, read_only: bool = False):
    """Open ``--store``: only ``ingest`` creates a store; ``read_only`` opens it without writing.
    What the store worked around while opening (a rebuilt index, ...) is printed as a warning line."""
    from .store import CaseStore

    kw = {"shortlist": args.shortlist} if getattr(args, "shortlist", None) else {}
    if getattr(args, "database", None):
        kw["database"] = args.database
    if create and getattr(args, "marks", False):
        kw["preprocess_params"] = {"marks": True}
    with _store_warnings():
        return CaseStore(args.store, create=create, read_only=read_only or getattr(args, "read_only", False), **kw)


@contextmanager
def _store_warnings(show: bool = True):
    """Print a store's warnings as one ``warning: ...`` line each on stderr (or not at all)."""
    from .errors import StoreWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StoreWarning)
        yield
    for w in caught:
        if issubclass(w.category, StoreWarning):
            if show:
                print(f"warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _writable(folder) -> bool:
    """Whether this user may write the store in ``folder`` (else search and report open it read-only)."""
    db = Path(folder) / "store.sqlite"
    return os.access(folder, os.W_OK) and (not db.exists() or os.access(db, os.W_OK))


def _skipped_line(skipped: list[dict], store) -> str:
    """One line on the candidates a search or link left out because their cached scans are damaged."""
    n = len(skipped)
    damaged = [s["exhibit_id"] for s in skipped if s["state"] != "missing"]
    missing = [s["exhibit_id"] for s in skipped if s["state"] == "missing"]
    parts = (
        [
            f"damaged cached scan{'s' if len(damaged) > 1 else ''} of exhibit{'s' if len(damaged) > 1 else ''} "
            f"{', '.join(damaged)}"
        ]
        if damaged
        else []
    ) + (
        [f"cached scan{'s' if len(missing) > 1 else ''} dropped by an earlier repair: {', '.join(missing)}"]
        if missing
        else []
    )
    return (
        f"{n} candidate{'s' if n > 1 else ''} skipped: {'; '.join(parts)}; run `ballistix check --store "
        f"{safe_text(store)} --repair`"
    )


def cmd_ingest(args) -> int:
    """Add scan files to a case store (created if new); bad files are reported and skipped."""
    meta = {
        k: v
        for k, v in (
            ("scene_id", args.scene),
            ("firearm_id", args.firearm),
            ("kind", args.kind),
            ("date", args.date),
            ("calibre", args.calibre),
        )
        if v
    }
    with _store(args, create=True) as st:
        r = st.ingest(
            args.files, meta=meta, progress=not args.json, client=args.scheduler, units=args.units, **_image_kw(args)
        )
        total, created = len(st), st.created
    for source, reason in r.failed:
        print(
            f"error: {_say(reason, args)}" if source in reason else f"error: {source}: {_say(reason, args)}",
            file=sys.stderr,
        )
    if args.json:
        print(
            json.dumps({**r.to_dict(), "store": str(args.store), "exhibits": total, "created_store": created}, indent=2)
        )
    else:
        if created:
            print(f"created a new case store at {safe_text(args.store)}")
        print(
            f"{len(r.added)} added, {len(r.existing)} already in the store, {len(r.failed)} failed; "
            f"{total} exhibits in {safe_text(args.store)}"
        )
    return EXIT_BAD_INPUT if r.failed else 0


def cmd_search(args) -> int:
    """Find the exhibits of a store most likely fired by the same gun as a scan (or a stored exhibit)."""
    with _store(args, read_only=not _writable(args.store)) as st, _store_warnings(show=False):
        with _naming(args.query):
            cands = st.search(
                args.query, k=args.k, n_jobs=args.jobs, units=args.units, verify_top=args.verify_top, **_image_kw(args)
            )
    if cands.skipped:
        print(f"warning: {_skipped_line(cands.skipped, args.store)}", file=sys.stderr)
    if args.json:
        print(
            json.dumps(
                {"query": args.query, "store": str(args.store), "candidates": cands, "skipped": cands.skipped}, indent=2
            )
        )
    else:
        _print_table(
            [
                {
                    "exhibit_id": c["exhibit_id"],
                    "source_name": c["source_name"],
                    "cmc_count": c["cmc_count"],
                    "score": round(c["score"], 3),
                    "descriptor_score": round(c["descriptor_score"], 3),
                    "descriptor_rank": c["descriptor_rank"],
                    "log10_lr": "-" if c["log10_lr"] is None else round(c["log10_lr"], 2),
                    "conclusion": c["conclusion"],
                }
                for c in cands
            ]
        )
        for origin in sorted({c["calibration_origin"] for c in cands if c["calibration_origin"]}):
            print(f"calibration: {origin}")
        if any(c["log10_lr"] is None for c in cands):
            print(
                "candidate: no calibration applies to the pair (population or settings): for an examiner, "
                "never an identification"
            )
    return 0


def cmd_compare(args) -> int:
    """Compare two scan files: preprocess both, Congruent Matching Cells, likelihood ratio and conclusion."""
    from .features.preprocessing import preprocess
    from .io import read_scan
    from .verify import compare

    def prepared(f):
        image = Path(f).suffix.lower() in (".png", ".tif", ".tiff")
        with _naming(f):
            return preprocess(
                read_scan(f, units=args.units, **(_image_kw(args) if image else {})), marks=bool(args.marks)
            )

    a, b = prepared(args.a), prepared(args.b)
    given = {k: v for k, v in (("calibre", args.calibre), ("make_model", args.make_model)) if v}
    for s in (a, b):  # the population both cases come from: it chooses the calibration
        s.meta["labels"] = {**(s.meta.get("labels") or {}), **given}
    registered = []
    if args.store:  # the lab's registered calibrations (and the shipped ones) choose; nothing is written
        with _store(args, read_only=True) as st:
            registered = st.calibrations()
    if args.calibration:  # only a shipped calibration or one registered in --store is used
        from .evidence import trusted_calibration

        calibration = trusted_calibration(args.calibration, registered)
    else:
        calibration = registered or "default"
    with _naming(args.a, args.b), warnings.catch_warnings():
        warnings.simplefilter("ignore", ResolutionWarning)  # said below, in one line, and in the JSON
        r = compare(a, b, calibration=calibration)
    for w in r.warnings:
        print(f"warning: {w}", file=sys.stderr)
    out = {
        "a": args.a,
        "b": args.b,
        "cmc_count": r.cmc_count,
        "cells": r.n_cells,
        "score": r.score,
        "rotation_deg": r.rotation_deg,
        "translation_m": [float(t) for t in r.translation],
        "log10_lr": r.log10_lr,
        "lr": r.lr,
        "evidence": r.evidence,
        "warnings": r.warnings,
        "marks": {m: v.to_dict() for m, v in r.marks.items()},
    }
    if args.json:
        print(json.dumps({**out, "comparison": r.to_dict()}, indent=2, default=str))
        return 0
    _print_table(
        [
            {
                k: (round(v, 3) if isinstance(v, float) else v)
                for k, v in out.items()
                if k in ("cmc_count", "cells", "score", "rotation_deg")
            }
        ]
    )
    print()
    for line in evidence_lines(r) + mark_lines(r):
        print(line)
    return 0


def mark_lines(r) -> list[str]:
    """The other marks of a comparison (``--marks``), one line each, and the fused LR or why there is none."""
    if not r.marks:
        return []
    per = (r.evidence.get("marks") or {}).get("per_mark") or {}
    lines = []
    for m, res in r.marks.items():
        name = m.replace("_", " ")
        lr = (per.get(m) or {}).get("log10_lr")
        if not res.used:
            lines.append(f"{name}: not used ({res.reason})")
        else:
            weighed = (
                f", log10 LR {lr:+.2f}" if lr is not None else f" ({(per.get(m) or {}).get('reason', 'not weighed')})"
            )
            lines.append(f"{name}: {res.count} of {res.n_elements} congruent, score {res.score:.3f}{weighed}")
    fused = (r.evidence.get("marks") or {}).get("fused") or {}
    if r.evidence.get("lr_basis"):
        lines.append(
            f"the likelihood ratio above is {r.evidence['lr_basis']} (breech face alone: log10 LR "
            f"{r.evidence['breech_face_log10_lr']:+.2f})"
        )
    elif fused.get("reason"):
        lines.append(f"marks not fused: {fused['reason']}")
    return lines


def evidence_lines(r) -> list[str]:
    """What a comparison's likelihood ratio and conclusion say, in words, with the error rate."""
    ev = r.evidence
    if r.log10_lr is None:
        return [ev.get("note", "no likelihood ratio (no calibration asked for)")]
    c = ev["conclusion"]
    lines = [
        f"likelihood ratio {r.lr:.3g} (log10 {r.log10_lr:+.2f}): {c['verbal']}",
        f"calibration: {(ev.get('calibration_origin') or {}).get('text') or ev['calibration']}"
        + (
            f" (population: {ev['calibration_domain'].get('description')})"
            if (ev.get("calibration_domain") or {}).get("description")
            else ""
        ),
        *([f"note: {ev['capped']}"] if ev.get("capped") else []),
        *([f"note: {ev['assumed']}"] if ev.get("assumed") else []),
        f"conclusion (aid to the examiner): {c['conclusion'].upper()} "
        f"(identification at LR >= {c['thresholds_lr']['identification']:g}, "
        f"elimination at LR <= {c['thresholds_lr']['elimination']:g})",
    ]
    e = c.get("error_rate")
    if e and "k" in e:
        lines.append(
            f"measured error rate: {e['what']}: {e['k']} of {e['n']} ({100 * e['rate']:.2f}%, "
            f"95% upper bound {100 * e['upper95']:.2f}%) in cross-validation by gun"
        )
    elif e:
        lines.append(
            f"in cross-validation by gun, {e['what']}: {100 * e['same']:.1f}% of same-gun and "
            f"{100 * e['different']:.1f}% of different-gun pairs"
        )
    return lines


def cmd_link(args) -> int:
    """Compare every new exhibit of a store with its shortlist, and write the linkage graph."""
    with _store(args) as st:
        with _store_warnings(show=False):
            n = st.link_new(n_jobs=args.jobs, progress=not args.json, client=args.scheduler, verify_top=args.verify_top)
        skipped = st.skipped
        g = st.graph(comparisons=args.comparisons)
    if skipped:
        print(f"warning: {_skipped_line(skipped, args.store)}", file=sys.stderr)
    out = Path(args.out)
    g.to_html(out) if out.suffix.lower() == ".html" else g.export(out)
    groups = g.group_summaries(min_size=2)
    cands = g.candidates()
    if args.json:
        print(
            json.dumps(
                {
                    "comparisons_recorded": n,
                    "decision_rule": g.decision_rule(),
                    "groups": groups,
                    "candidates": cands,
                    "skipped": skipped,
                    "graph": _graph_kept(g),
                    "out": str(out),
                },
                indent=2,
            )
        )
    else:
        print(
            f"{n} comparisons recorded; {len(groups)} same-gun groups of 2+ exhibits; "
            f"{len(cands)} candidates for review; wrote {safe_text(out)}"
        )
        print(f"links: {g.decision_rule()}")
        if _graph_kept(g)["comparisons"] == "evidence":
            print(_evidence_line(g.nx.graph["comparisons_recorded"], g.nx.graph["comparisons_left_out"]))
    return 0


def _graph_kept(g) -> dict:
    """Which comparisons a store's graph holds: ``comparisons`` ("all" or "evidence"), how many the
    store recorded and how many the graph left out."""
    a = g.nx.graph
    if a.get("comparisons") == "evidence":
        keys = ("comparisons", "comparisons_recorded", "comparisons_left_out")
        return {k: a[k] for k in keys}
    n = sum(1 for *_, k in g.nx.edges(data="kind") if k == "match")
    return {"comparisons": "all", "comparisons_recorded": n, "comparisons_left_out": 0}


def _evidence_line(recorded: int, left_out: int | None) -> str:
    """What an evidence-only graph left out, in one line."""
    from .store.casestore import GRAPH_ALL_LIMIT

    left = (
        f"{left_out:,} eliminations (compared, no link) left out" if left_out is not None else "eliminations left out"
    )
    return (
        f"graph: evidence only: the links, candidates for review and examiner verdicts of {recorded:,} recorded "
        f"comparisons; {left} (a store of more than {GRAPH_ALL_LIMIT:,} comparisons; --comparisons all keeps every one)"
    )


def cmd_rule(args) -> int:
    """Show or set a store's link rule: a likelihood ratio from an applicable calibration (the
    default, LR >= 100), or a CMC count rule the lab validated on its own population."""
    from .graph.linkage import LINK_LR, DecisionRule

    with _store(args) as st:
        if args.count_rule is not None or args.link_lr is not None:
            try:
                count = None if args.count_rule in (None, "none") else int(args.count_rule)
            except ValueError:
                raise ParameterError(
                    f"--count-rule must be a whole number of CMCs or 'none', got {args.count_rule!r}"
                ) from None
            st.set_decision_rule(link_lr=args.link_lr or LINK_LR, count_rule=count, reason=args.reason or "")
        rule = st.decision_rule
        text = DecisionRule(link_lr=rule["link_lr"], count_rule=rule["count_rule"]).describe()
    print(json.dumps({**rule, "rule": text}, indent=2) if args.json else f"links: {text}")
    return 0


def cmd_register(args) -> int:
    """Register a calibration file (for example validation/calibration.json from ``ballistix validate``)
    in a store: its comparisons then take the most specific registered or shipped calibration whose
    population holds both scans. A marks calibration (``ballistix.fusion.MarksCalibration.save``) weighs
    and fuses the firing pin and aperture shear of a store made with ``ingest --marks``."""
    with _store(args) as st:
        rec = st.register_calibration(args.calibration, reason=args.reason)
    print(
        json.dumps(rec, indent=2)
        if args.json
        else f"registered {rec['name']!r} ({rec['sha256'][:12]}) in {args.store}; domain: {rec['domain']}"
    )
    return 0


def cmd_report(args) -> int:
    """Write a case store's report: leads, same-gun groups, scene timeline, 16.4.2 (one offline HTML file)."""
    with _store(args, read_only=not _writable(args.store)) as st:
        kept = st.graph_comparisons(args.comparisons)
        path = st.report(args.out, since=args.since, comparisons=kept["comparisons"])
    if args.json:
        print(json.dumps({"report": str(path), "graph": kept}))
        return 0
    print(f"wrote {safe_text(path)}")
    if kept["comparisons"] == "evidence":
        print(_evidence_line(kept["comparisons_recorded"], None) + "; counted in the report")
    return 0


EXIT_PROBLEMS = 1


def cmd_confirm(args) -> int:
    """Record an examiner's decision on a recorded comparison of two exhibits: identification,
    elimination or inconclusive, with the examiner's name and the reason. Decisions are kept in the
    store's append-only log with the time and the user: a later decision on the same pair supersedes
    this one, none is ever changed. The graph, the leads and the report follow the current decision
    (inconclusive: neither a link nor an elimination, a candidate for review)."""
    with _store(args) as st:
        d = st.confirm(args.a, args.b, args.verdict, examiner=args.examiner, reason=args.reason)
    if args.json:
        print(json.dumps(d, indent=2))
    else:
        print(
            f"decision {d['decision_id']}: {safe_text(d['exhibit_a'])} - {safe_text(d['exhibit_b'])}: "
            f"{d['verdict']} by {safe_text(d['examiner'])} at {d['created_utc']}"
            + (f", superseding decision {d['supersedes']}" if d["supersedes"] is not None else "")
        )
    return 0


def cmd_decisions(args) -> int:
    """List a store's examiners' decisions, oldest first: all of them, those on one exhibit's
    comparisons (A), or those on one pair (A B); --current: only the decision in force for each pair."""
    with _store(args, read_only=not _writable(args.store)) as st:
        rows = st.decisions(args.a, args.b, current=args.current)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    _print_table(
        [
            {
                "id": d["decision_id"],
                "a": safe_text(d["exhibit_a"]),
                "b": safe_text(d["exhibit_b"]),
                "verdict": d["verdict"],
                "examiner": safe_text(d["examiner"]),
                "when (UTC)": d["created_utc"],
                "supersedes": "-" if d["supersedes"] is None else d["supersedes"],
                "reason": safe_text(d["reason"]),
            }
            for d in rows
        ]
    )
    return 0


def cmd_imports(args) -> int:
    """List the files imported into a store, oldest first: case-data tables (ballistix import) and
    bundles of exhibits from other labs (ballistix import-exhibits), each with its SHA-256, its
    counts, who imported it and when. The log is append-only: a record is never changed."""
    with _store(args, read_only=not _writable(args.store)) as st:
        rows = st.imports()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    _print_table([_import_row(d) for d in rows])
    return 0


def _import_row(d: dict) -> dict:
    """A row of the imports log as ``ballistix imports`` prints it."""
    s = d["summary"] or {}
    note = ""
    if d["kind"] == "exhibits-bundle":
        lab = s.get("lab") or {}
        note = (
            f"from {safe_text(lab.get('id'))}: {s.get('exhibits_existing', 0)} already here, "
            f"{s.get('exhibits_failed', 0)} failed"
        )
    return {
        "id": d["import_id"],
        "kind": d["kind"],
        "file": safe_text(d["source_name"]),
        "sha256": d["sha256"][:12],
        "rows": d["rows"],
        "added": d["added"],
        "updated": d["updated"],
        "by": safe_text(d["created_by"]),
        "when (UTC)": d["created_utc"],
        "notes": note or "-",
    }


def cmd_serve(args) -> int:
    """Serve the examiners' review app of a store on this machine (http://127.0.0.1:8750/ by
    default): the review queue, each comparison drawn with its pose and congruent cells, the
    decision form (the store's append-only audit log), groups, graph and report. Another interface
    (--host) needs --allow-remote and a login (--password-file, or BALLISTIX_SERVE_PASSWORD).
    Needs Flask and waitress: pip install 'ballistix[serve]'."""
    try:
        import flask  # noqa: F401
        import waitress  # noqa: F401
    except ImportError as e:
        print(
            f"error: ballistix serve needs Flask and waitress ({e.name} is not installed): "
            "pip install 'ballistix[serve]'",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    from werkzeug.security import generate_password_hash

    from .serve import check_binding, serve

    password_hash = None
    if args.password_file:
        try:
            password_hash = Path(args.password_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ParameterError(f"{args.password_file}: cannot read the password file ({e})") from None
        if not password_hash.count("$") >= 2:
            raise ParameterError(
                f'{args.password_file}: not a password hash (make one with: python -c "from werkzeug.security '
                f"import generate_password_hash as h; print(h(input('password: ')))\")"
            )
    elif os.environ.get("BALLISTIX_SERVE_PASSWORD"):
        password_hash = generate_password_hash(os.environ["BALLISTIX_SERVE_PASSWORD"])
    check_binding(args.host, allow_remote=args.allow_remote, password_hash=password_hash)
    read_only = args.read_only or not _writable(args.store)

    def ready(url: str) -> None:
        print(
            f"serving {safe_text(args.store)}{' (read-only)' if read_only else ''} at {url}"
            f"{' (login required)' if password_hash else ''}; Ctrl-C stops",
            flush=True,
        )
        if args.allow_remote:
            print(
                "warning: plain HTTP: the password and the pages cross the network unencrypted; "
                "serve it behind a TLS proxy outside a trusted network",
                file=sys.stderr,
                flush=True,
            )

    try:
        serve(
            args.store,
            host=args.host,
            port=args.port,
            allow_remote=args.allow_remote,
            password_hash=password_hash,
            examiner=args.examiner,
            read_only=read_only,
            ready=ready,
        )
    except OSError as e:
        raise ParameterError(f"cannot serve on {args.host}:{args.port} ({e.strerror or e})") from None
    except KeyboardInterrupt:  # waitress ends its loop on Ctrl-C itself; this is for an interrupt before it runs
        pass
    print("stopped", file=sys.stderr)
    return 0


def cmd_import(args) -> int:
    """Import case data into a store from CSV files: scenes, recovered firearms, tracing results
    (the columns: docs/store.md, "Case data"). Each file is checked whole and written all or
    nothing; a refused file names its line and column and changes nothing."""
    done = []
    with _store(args, create=True) as st:
        for f in args.files:
            done.append(st.import_table(f, args.kind))
    if args.json:
        print(json.dumps(done, indent=2))
    else:
        for d in done:
            print(
                f"{safe_text(d['file'])}: {d['rows']} {d['kind']} rows, {d['added']} added, {d['updated']} updated "
                f"(sha256 {d['sha256'][:12]})"
            )
    return 0


def cmd_export(args) -> int:
    """Export a store's case data as CSV: scenes, firearms or tracing (the columns `ballistix import`
    reads, so a table exported and imported again is the same); or iafq: the figures of the UNODC
    Illicit Arms Flows Questionnaire and SDG 16.4.2 for --year (CSV, or XLSX when --out ends in .xlsx)."""
    if args.table == "iafq" and args.year is None:
        raise ParameterError("export iafq needs --year (the calendar year of the recoveries)")
    with _store(args, read_only=True) as st:
        if args.table == "iafq":
            fig = st.iafq(args.year, args.out)
            sdg = fig["sdg_16_4_2"]["value"]
            print(
                f"{fig['firearms']} firearms recovered in {args.year} ({fig['undated']} with no recovery date); "
                f"SDG 16.4.2 traced share: {'n/a' if sdg is None else f'{sdg:.1%}'}"
            )
        else:
            st.export_table(args.out, args.table)
    print(f"wrote {safe_text(args.out)}")
    return 0


def cmd_export_exhibits(args) -> int:
    """Write a store's exhibits (all, or --exhibits) as a bundle for another lab: their source x3p
    files, metadata, provenance and SHA-256, the scenes and firearms they refer to, and --lab."""
    with _store(args, read_only=True) as st:
        out = st.export_exhibits(args.out, args.exhibits, lab=args.lab, lab_name=args.lab_name)
    print(f"wrote {safe_text(out)}")
    return 0


def cmd_import_exhibits(args) -> int:
    """Import a bundle of exhibits from another lab: every checksum is verified before anything is
    written (one failure refuses the bundle), and each exhibit keeps the sending lab's identity."""
    with _store(args, create=True) as st:
        r = st.import_exhibits(args.bundle, progress=not args.json)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(
            f"from {safe_text(r['lab']['id'])}: {len(r['added'])} exhibits added, {len(r['existing'])} already here, "
            f"{len(r['failed'])} failed; {len(r['scenes_added'])} scenes and {len(r['firearms_added'])} firearms "
            f"added, {len(r['kept_local'])} kept as this store has them (bundle sha256 {r['bundle_sha256'][:12]})"
        )
        for source, reason in r["failed"]:
            print(f"failed: {safe_text(source)}: {safe_text(reason)}", file=sys.stderr)
    return 0 if not r["failed"] else 1


def cmd_check(args) -> int:
    """Verify a case store, fsck-style: the database (integrity, schema, settings), every exhibit's
    descriptor and cached scan (present, readable, the file recorded at ingest), the index (the ids
    and vectors of the database) and the registered calibrations. Without --repair nothing is
    written (the store is opened read-only). --repair rebuilds the index and re-creates damaged
    cached scans from their source files when these are unchanged and reproduce the stored
    descriptor; otherwise it drops the damaged file and marks the exhibit's scan missing. Exit code 0
    when all is well (or repaired), 1 when problems remain."""
    with _store(args, read_only=not args.repair) as st:
        r = st.check(repair=args.repair)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0 if r["ok"] else EXIT_PROBLEMS
    by = {}
    for p in r["problems"]:
        by.setdefault(p["check"], []).append(p)
    names = {
        "database": "database",
        "descriptors": "descriptor",
        "scans": "scan",
        "index": "index",
        "calibrations": "calibration",
    }
    _print_table(
        [
            {
                "check": what,
                "checked": n,
                "problems": len(by.get(names.get(what, what), [])),
                "repaired": sum(p["repaired"] for p in by.get(names.get(what, what), [])),
            }
            for what, n in r["checked"].items()
        ]
    )
    for p in r["problems"]:
        print(
            f"{'repaired' if p['repaired'] else 'PROBLEM'}: {p['check']} {p['item']}: {p['problem']}"
            + (f" -> {p['action']}" if p["action"] else "")
        )
    for note in r["notes"]:
        print(f"note: {note}")
    left = sum(not p["repaired"] for p in r["problems"])
    print(
        f"{safe_text(args.store)}: "
        + (
            "all well"
            if not r["problems"]
            else "all problems repaired"
            if r["ok"]
            else f"{left} problem{'s' if left > 1 else ''} left"
            + (
                ""
                if args.repair
                else f"; `ballistix check --store {safe_text(args.store)} --repair` mends what can be mended"
            )
        )
    )
    return 0 if r["ok"] else EXIT_PROBLEMS


def cmd_validate(args) -> int:
    """Validate the method on the lab's own scans of known truth (ISO/IEC 17025): compare all pairs
    (or a sample of the different-gun pairs), cross-validate likelihood ratios by gun, measure the
    error rates of each decision rule with 95% confidence intervals, recommend a rule, and write
    calibration.json, validation.json and report.html to --out. FILES may be omitted: every file
    listed in the labels CSV is used."""
    from .graph.linkage import CONVENTIONAL_CMC_RULE
    from .validation import validate

    r = validate(
        args.files or None,
        args.labels,
        out=args.out,
        pairs=args.pairs if args.pairs else "all",
        seed=args.seed,
        n_jobs=args.jobs,
        client=args.scheduler,
        progress=not args.json,
        n_folds=args.folds,
        fpr_target=args.fpr_target,
        skip_unreadable=args.skip_unreadable,
        preprocess_params={"spacing_um": args.spacing_um} if args.spacing_um else None,
        name=args.name,
    )
    if args.json:
        print(json.dumps(r.summary(), indent=2, default=str))
        return 0
    print(
        f"{r.n_scans} scans of {r.n_firearms} firearms; {r.n_pairs} pairs ({r.n_same} same-gun, "
        f"{r.n_different} different-gun){'' if r.pairs_plan['mode'] == 'all' else f', seed {args.seed}'}"
    )
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    _print_table(
        [
            {
                "rule": f"{x['kind']} at {x['rule']}",
                "same_gun": f"{x['same_called']}/{x['n_same']}",
                "same_%": pct(x["rate_same"]),
                "different_gun": f"{x['different_called']}/{x['n_different']}",
                "different_%": pct(x["rate_different"]),
                "different_95%_CI": f"{pct(x['ci95_different'][0])}-{pct(x['ci95_different'][1])}",
            }
            for x in r.lr_rules + [c for c in r.cmc_rules if c["threshold"] in (CONVENTIONAL_CMC_RULE, 8, 10)]
        ]
    )
    print(f"\ncross-validated Cllr {r.cllr:.3f} (min {r.cllr_min:.3f}); AUC LR {r.auc_lr:.3f}, CMC {r.auc_cmc:.3f}")
    print(r.recommendation["text"])
    for label, path in (("report", r.report), ("calibration", r.calibration_json), ("record", r.validation_json)):
        print(f"{label}: {path}")
    return 0


def _checkout() -> Path | None:
    """The source checkout this ballistix runs from (an editable install), else None: the
    benchmarks/ folder is not in the wheel (pyproject.toml installs the ballistix package only)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "benchmarks" / "__main__.py").is_file() else None


def cmd_bench(args) -> int:
    """Run the benchmarks and print one summary table: ``python -m benchmarks`` in the source
    checkout this ballistix runs from (the benchmarks/ folder is not installed with the package)."""
    import shlex
    import subprocess

    root = _checkout()
    if root is None:
        print(
            "error: ballistix bench runs the benchmarks of a source checkout, and this ballistix is installed "
            f"without one; in a checkout, run: python -m benchmarks {shlex.join(args.args)}".rstrip(),
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    return subprocess.call([sys.executable, "-m", "benchmarks", *args.args], cwd=root)


def build_parser() -> argparse.ArgumentParser:
    """The ``ballistix`` command line: one subcommand a function (`_demo_parser`, ...)."""
    p = argparse.ArgumentParser(prog="ballistix", description="Ballistic matching and firearm-linkage analysis.")
    p.add_argument("--version", action="version", version=f"ballistix {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (
        _demo_parser,
        _ingest_parser,
        _search_parser,
        _compare_parser,
        _link_parser,
        _report_parser,
        _check_parser,
        _confirm_parser,
        _decisions_parser,
        _imports_parser,
        _serve_parser,
        _rule_parser,
        _import_parser,
        _export_parser,
        _exchange_parsers,
        _register_calibration_parser,
        _validate_parser,
        _bench_parser,
        _info_parser,
    ):
        add(sub)
    return p


def _demo_parser(sub) -> None:
    """The ``demo`` subcommand and its arguments."""
    d = sub.add_parser(
        "demo", help="the whole story on simulated casework: ingest, search, link, report", description=cmd_demo.__doc__
    )
    d.add_argument("--out", default="ballistix-demo", help="output folder (default: ./ballistix-demo)")
    d.add_argument("--firearms", type=_positive_int, default=4, help="number of guns (default 4)")
    d.add_argument("--scenes", type=_positive_int, default=6, help="number of crime scenes (default 6)")
    d.add_argument("--seed", type=_non_negative_int, default=0)
    d.add_argument(
        "--resolution",
        default="standard",
        choices=["fast", "standard", "full"],
        help="scan resolution: fast 12.5 um, standard 6.25 um, full 3.125 um (default standard)",
    )
    d.add_argument("--json", action="store_true", help="print JSON instead of tables")
    d.set_defaults(func=cmd_demo)


def _ingest_parser(sub) -> None:
    """The ``ingest`` subcommand and its arguments."""
    ing = sub.add_parser("ingest", help="add scan files to a case store", description=cmd_ingest.__doc__)
    ing.add_argument("files", nargs="+")
    ing.add_argument("--store", required=True, help="the store's folder (created if new)")
    ing.add_argument(
        "--database",
        metavar="URL",
        help="postgresql://user@host/db: a new store's records on a PostgreSQL server (an empty database; the "
        "password from ~/.pgpass or PGPASSWORD); the folder, shared, keeps the scans and the index and names "
        "the database, so later commands need only --store",
    )
    ing.add_argument("--scene", type=_text, help="scene id of these cartridge cases")
    ing.add_argument("--firearm", type=_text, help="firearm id, for test fires")
    ing.add_argument("--kind", choices=["scene", "test_fire"])
    ing.add_argument("--date", type=_date, help="date of the cartridge cases, YYYY-MM-DD")
    ing.add_argument("--calibre", type=_text)
    ing.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786): preprocess on the cluster")
    ing.add_argument(
        "--marks",
        action="store_true",
        help="a new store also extracts each raw scan's firing pin and aperture shear, compares them with every "
        "pair it verifies and fuses them with the breech face where a marks calibration applies (about 3x the "
        "time a pair; a store's setting, fixed when it is created)",
    )
    ing.add_argument("--json", action="store_true")
    _units_option(ing)
    _pixel_size_option(ing)
    ing.set_defaults(func=cmd_ingest)


def _search_parser(sub) -> None:
    """The ``search`` subcommand and its arguments."""
    se = sub.add_parser("search", help="search a case store for a scan or an exhibit", description=cmd_search.__doc__)
    se.add_argument("query", help="a scan file, or the id of an exhibit in the store")
    se.add_argument("--store", required=True)
    se.add_argument("-k", type=_positive_int, default=20, help="candidates to list (default 20)")
    se.add_argument("--shortlist", type=_positive_int, help="candidates verified by CMC (default: the store's, 50)")
    se.add_argument("--jobs", type=_positive_int, default=1)
    se.add_argument(
        "--verify-top",
        type=_positive_int,
        help="pre-check the shortlist and verify only its best N with CMC (default: verify all)",
    )
    se.add_argument(
        "--read-only", action="store_true", help="write nothing to the store (automatic when it is not writable)"
    )
    se.add_argument("--json", action="store_true")
    _units_option(se)
    _pixel_size_option(se)
    se.set_defaults(func=cmd_search)


def _compare_parser(sub) -> None:
    """The ``compare`` subcommand and its arguments."""
    co = sub.add_parser("compare", help="compare two scan files (CMC)", description=cmd_compare.__doc__)
    co.add_argument("a")
    co.add_argument("b")
    co.add_argument(
        "--store",
        help="case store whose registered calibrations may weigh the pair (read only; "
        "default: the shipped calibrations only)",
    )
    co.add_argument(
        "--calibration",
        help="calibration file for the likelihood ratio: only the shipped one or one "
        "registered in --store is used (default: the most specific shipped or "
        "registered one whose population holds both scans)",
    )
    co.add_argument(
        "--calibre", type=_text, help="calibre of both cartridge cases, e.g. '9mm Luger' (chooses the calibration)"
    )
    co.add_argument("--make-model", type=_text, help="make and model of the firearm, when known, e.g. 'Ruger P95'")
    co.add_argument(
        "--marks",
        action="store_true",
        help="also compare the firing-pin impressions and aperture shears of the raw scans, and fuse them with the "
        "breech face where a marks calibration applies (about 1-2 s more)",
    )
    co.add_argument("--json", action="store_true")
    _units_option(co)
    _pixel_size_option(co)
    co.set_defaults(func=cmd_compare)


def _link_parser(sub) -> None:
    """The ``link`` subcommand and its arguments."""
    li = sub.add_parser("link", help="link new exhibits of a store and write the graph", description=cmd_link.__doc__)
    li.add_argument("--store", required=True)
    li.add_argument("--out", required=True, help="graph file: .graphml, .gexf, .json or .html (interactive view)")
    li.add_argument(
        "--shortlist", type=_positive_int, help="candidates compared per new exhibit (default: the store's, 50)"
    )
    li.add_argument("--jobs", type=_positive_int, default=1)
    li.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786): compare on the cluster")
    li.add_argument(
        "--verify-top",
        type=_positive_int,
        help="pre-check each shortlist and verify and record only its best N (default: verify all)",
    )
    _comparisons_argument(li)
    li.add_argument("--json", action="store_true")
    li.set_defaults(func=cmd_link)


def _import_parser(sub) -> None:
    """The ``import`` subcommand and its arguments."""
    im = sub.add_parser("import", help="import scenes, firearms or tracing CSV files", description=cmd_import.__doc__)
    im.add_argument("files", nargs="+", help="CSV files (scenes.csv, firearms.csv, tracing.csv)")
    im.add_argument("--store", required=True)
    im.add_argument("--kind", choices=["scenes", "firearms", "tracing"], help="the table (default: from the columns)")
    im.add_argument("--json", action="store_true")
    im.set_defaults(func=cmd_import)


def _export_parser(sub) -> None:
    """The ``export`` subcommand and its arguments."""
    ex = sub.add_parser(
        "export", help="export a store's scenes, firearms or tracing as CSV", description=cmd_export.__doc__
    )
    ex.add_argument("table", choices=["scenes", "firearms", "tracing", "iafq"])
    ex.add_argument("--store", required=True)
    ex.add_argument("--out", required=True, help="file to write: .csv (iafq: also .xlsx)")
    ex.add_argument("--year", type=_positive_int, help="iafq: the calendar year of the recoveries")
    ex.set_defaults(func=cmd_export)


def _exchange_parsers(sub) -> None:
    """The ``export-exhibits`` and ``import-exhibits`` subcommands and their arguments."""
    ex = sub.add_parser(
        "export-exhibits", help="write exhibits as a bundle for another lab", description=cmd_export_exhibits.__doc__
    )
    ex.add_argument("--store", required=True)
    ex.add_argument("--out", required=True, help="bundle file to write")
    ex.add_argument("--lab", required=True, help="this lab's identifier, kept on every record by the receiver")
    ex.add_argument("--lab-name", help="this lab's name")
    ex.add_argument("--exhibits", nargs="+", help="exhibit ids (default: all)")
    ex.set_defaults(func=cmd_export_exhibits)
    im = sub.add_parser(
        "import-exhibits", help="import a bundle of exhibits from another lab", description=cmd_import_exhibits.__doc__
    )
    im.add_argument("bundle")
    im.add_argument("--store", required=True)
    im.add_argument("--json", action="store_true")
    im.set_defaults(func=cmd_import_exhibits)


def _comparisons_argument(parser) -> None:
    parser.add_argument(
        "--comparisons",
        choices=("auto", "all", "evidence"),
        default="auto",
        help="comparisons in the graph: every one ('all'), or only links, candidates for review and "
        "examiner verdicts ('evidence', the eliminations counted); 'auto' (default): 'all' unless the "
        "store holds more than ballistix.store.GRAPH_ALL_LIMIT comparisons (see docs/store.md)",
    )


def _report_parser(sub) -> None:
    """The ``report`` subcommand and its arguments."""
    rp = sub.add_parser("report", help="write a case store's HTML report", description=cmd_report.__doc__)
    rp.add_argument("--store", required=True)
    rp.add_argument("--out", default="report.html")
    rp.add_argument(
        "--since",
        type=_since,
        help="ISO date (YYYY-MM-DD) or UTC time (YYYY-MM-DDTHH:MM): exhibits ingested since then are "
        "the new ones (default: last day)",
    )
    rp.add_argument(
        "--read-only", action="store_true", help="write nothing to the store (automatic when it is not writable)"
    )
    _comparisons_argument(rp)
    rp.add_argument("--json", action="store_true")
    rp.set_defaults(func=cmd_report)


def _check_parser(sub) -> None:
    """The ``check`` subcommand and its arguments."""
    ck = sub.add_parser("check", help="verify a case store (and repair it)", description=cmd_check.__doc__)
    ck.add_argument("--store", required=True)
    ck.add_argument("--repair", action="store_true", help="rebuild the index, re-create or drop damaged cached scans")
    ck.add_argument("--json", action="store_true")
    ck.set_defaults(func=cmd_check)


def _confirm_parser(sub) -> None:
    """The ``confirm`` subcommand and its arguments."""
    co = sub.add_parser(
        "confirm", help="record an examiner's decision on a recorded comparison", description=cmd_confirm.__doc__
    )
    co.add_argument("a", help="an exhibit id")
    co.add_argument("b", help="the other exhibit's id")
    co.add_argument("--store", required=True)
    co.add_argument("--verdict", required=True, choices=VERDICTS)
    co.add_argument("--examiner", required=True, type=_text, help="who decided")
    co.add_argument("--reason", required=True, type=_text, help="why: what was seen, or the case note")
    co.add_argument("--json", action="store_true")
    co.set_defaults(func=cmd_confirm)


def _decisions_parser(sub) -> None:
    """The ``decisions`` subcommand and its arguments."""
    de = sub.add_parser("decisions", help="list a store's examiners' decisions", description=cmd_decisions.__doc__)
    de.add_argument("a", nargs="?", help="only the decisions on this exhibit's comparisons")
    de.add_argument("b", nargs="?", help="only those on its comparison with this exhibit")
    de.add_argument("--store", required=True)
    de.add_argument("--current", action="store_true", help="only each pair's current decision")
    de.add_argument("--json", action="store_true")
    de.set_defaults(func=cmd_decisions)


def _imports_parser(sub) -> None:
    """The ``imports`` subcommand and its arguments."""
    ip = sub.add_parser("imports", help="list the files imported into a store", description=cmd_imports.__doc__)
    ip.add_argument("--store", required=True)
    ip.add_argument("--json", action="store_true")
    ip.set_defaults(func=cmd_imports)


def _serve_parser(sub) -> None:
    """The ``serve`` subcommand and its arguments."""
    se = sub.add_parser(
        "serve", help="the examiners' review app of a store (a local web page)", description=cmd_serve.__doc__
    )
    se.add_argument("--store", required=True)
    se.add_argument("--port", type=_port, default=8750, help="TCP port (default 8750; 0: any free port)")
    se.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    se.add_argument(
        "--allow-remote", action="store_true", help="allow a --host other than this machine (needs a login)"
    )
    se.add_argument(
        "--password-file",
        help="file holding a password hash (werkzeug.security.generate_password_hash): every page needs a login",
    )
    se.add_argument("--examiner", type=_text, help="the name the decision form starts with")
    se.add_argument("--read-only", action="store_true", help="show the store, record no decisions")
    se.set_defaults(func=cmd_serve)


def _rule_parser(sub) -> None:
    """The ``rule`` subcommand and its arguments."""
    ru = sub.add_parser("rule", help="show or set a store's link rule", description=cmd_rule.__doc__)
    ru.add_argument("--store", required=True)
    ru.add_argument(
        "--link-lr", type=_likelihood_ratio, help="likelihood ratio at or above which a comparison is a link"
    )
    ru.add_argument("--count-rule", help="a CMC count rule instead of the LR (needs --reason), or 'none'")
    ru.add_argument("--reason", type=_text, help="the validation that supports a count rule")
    ru.add_argument("--json", action="store_true")
    ru.set_defaults(func=cmd_rule)


def _register_calibration_parser(sub) -> None:
    """The ``register-calibration`` subcommand and its arguments."""
    rc = sub.add_parser(
        "register-calibration", help="register a lab's calibration file in a store", description=cmd_register.__doc__
    )
    rc.add_argument("calibration", help="the calibration file (JSON): a breech-face or a marks calibration")
    rc.add_argument("--store", required=True)
    rc.add_argument("--reason", required=True, type=_text, help="why it applies: the validation behind it")
    rc.add_argument("--json", action="store_true")
    rc.set_defaults(func=cmd_register)


def _validate_parser(sub) -> None:
    """The ``validate`` subcommand and its arguments."""
    va = sub.add_parser(
        "validate", help="validate the method on the lab's own scans of known truth", description=cmd_validate.__doc__
    )
    va.add_argument("files", nargs="*", help="scan files (default: every file listed in --labels)")
    va.add_argument("--labels", required=True, help="CSV with columns file,firearm[,calibre,make,model,instrument]")
    va.add_argument("--out", default="validation", help="output folder (default: ./validation)")
    va.add_argument("--pairs", type=_positive_int, help="different-gun pairs to sample (default: compare every pair)")
    va.add_argument(
        "--seed", type=_non_negative_int, default=0, help="seed of the pair sample and of the folds (default 0)"
    )
    va.add_argument("--jobs", type=_positive_int, default=1)
    va.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786): preprocess and compare there")
    va.add_argument("--folds", type=_folds, default=10, help="folds of guns for cross-validation (default 10)")
    va.add_argument(
        "--fpr-target",
        type=_share,
        default=0.01,
        help="largest acceptable false-identification rate, 95%% upper bound (default 0.01)",
    )
    va.add_argument(
        "--spacing-um", type=_positive_float, help="preprocessing resample spacing, um (default: the library's)"
    )
    va.add_argument(
        "--skip-unreadable", action="store_true", help="leave out unreadable scans (listed) instead of stopping"
    )
    va.add_argument("--name", type=_text, help="name of the calibration (default: says what was tested)")
    va.add_argument("--json", action="store_true")
    va.set_defaults(func=cmd_validate)


def _bench_parser(sub) -> None:
    """The ``bench`` subcommand and its arguments."""
    be = sub.add_parser("bench", help="run the benchmarks (from a source checkout)", description=cmd_bench.__doc__)
    be.add_argument(
        "args",
        nargs=argparse.REMAINDER,
        help="passed to python -m benchmarks: [names] [--quick | --full] [--jobs N] [--summary-only] [--update-readme]",
    )
    be.set_defaults(func=cmd_bench)


def _info_parser(sub) -> None:
    """The ``info`` subcommand and its arguments."""
    i = sub.add_parser("info", help="read scans (.x3p, .png, .tif, .npz) and print what is in them")
    i.add_argument("files", nargs="+")
    i.add_argument("--lenient", action="store_true", help="warn instead of failing on checksum mismatches")
    _pixel_size_option(i)
    i.add_argument("--json", action="store_true")
    _units_option(i)
    i.set_defaults(func=cmd_info)


def _pixel_size_option(parser) -> None:
    """``--pixel-size-um`` for the subcommands that read 2-D images (passed to read_image)."""
    parser.add_argument(
        "--pixel-size-um",
        "--pixel-size",
        type=_positive_float,
        metavar="UM",
        help="pixel size, in micrometres, of 2-D images (.png, .tif) that do not carry one",
    )


def _units_option(parser) -> None:
    """``--units`` for the subcommands that read scan files (passed to read_scan)."""
    parser.add_argument(
        "--units",
        choices=["auto", "m", "mm", "um"],
        default="auto",
        help="length unit of the x3p files' increments and heights (default auto: metres, as "
        "ISO 25178-72 asks, or mm / um when a file is unambiguously in them, with a warning)",
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = build_parser()
    if argv[:1] == ["bench"] and not {"-h", "--help"} & set(argv[1:]):
        args = parser.parse_args(["bench"])  # everything after "bench" goes to python -m benchmarks as given
        args.args = argv[1:]
    else:
        args = parser.parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):  # file names that are not UTF-8 print as \xff, not a traceback
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        return args.func(args)
    except BallistixError as e:
        print(f"error: {_say(e, args)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
