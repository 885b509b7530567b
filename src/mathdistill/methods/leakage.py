"""No run trains on what it evaluates (contract 11): the refusal before any stage, and decontamination.

    refuse_overlap(trains, evals)                   # config.validate: InputError (exit 2) naming both slices
    kept = decontaminate(run, cfg, problems)        # stage `decontaminate`: the training problems kept
    dc = decontaminator(cfg)                        # the same check for problems found later (FDD's new ones)

Refused: a training slice and an evaluation slice of the same dataset and split whose problem ranges
[offset, offset + limit) overlap, or any training question whose text (words, lower case) is an
evaluation question's, across datasets and splits.

Decontamination, for every distillation recipe (`steps.train_problems`, and the runner before any
recipe): the training problems are checked with FDD's rule (`data.decontam.Decontaminator`: a shared
word 13-gram, or a TF-IDF cosine >= 0.8; `decontam.*` of the recipe) against the run's evaluation
slices, loaded as evaluation loads them (hub or data root), plus every test set of the data root
when there is one. A training split that is itself a test split is not checked against its own
problems (the overlap refusal covers those). Those that meet the rule are dropped, unless
`data.decontaminate: false`, which keeps (and still reports) them. The check is one stage: its value
(the flagged problems, every cosine) is kept in the run folder, so a resumed run does not redo it, and
every report counts what it dropped (a note and a table in results.json and the HTML). FDD checks the
problems it finds in later rounds with the same `decontaminator(cfg)` and drops them whatever
`data.decontaminate` says (its paper's own step; its tables count them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mathdistill.data import ALIASES, Problem
from mathdistill.data.tfidf import words
from mathdistill.io import InputError, read_json

STAGE = "decontaminate"


# ----------------------------------------------------------------------------- the refusal


def _span(split, problems: list) -> tuple[int, int]:
    end = len(problems) if split.limit is None else min(len(problems), split.offset + split.limit)
    return split.offset, max(split.offset, end)


def _name(split, problems: list) -> str:
    lo, hi = _span(split, problems)
    return f"{split.dataset}/{split.split} [{lo}, {hi})"


def _text(question: str) -> str:
    return " ".join(words(question))


def refuse_overlap(trains: Sequence[tuple], evals: Sequence[tuple]) -> None:
    """`trains`, `evals`: (config key, Split, every problem of its dataset split). InputError naming both
    slices when a training slice overlaps an evaluation slice (same dataset and split, overlapping ranges),
    or shares a question text with one (any datasets and splits)."""
    def same(a, b) -> bool:
        key = lambda s: (ALIASES.get(s.dataset.lower(), s.dataset.lower()), s.split)  # noqa: E731
        return key(a) == key(b)

    for tkey, t, tps in trains:
        (tlo, thi), tname = _span(t, tps), _name(t, tps)
        texts = {_text(p.question): p for p in tps[tlo:thi]}
        for ekey, ev, eps in evals:
            (elo, ehi), ename = _span(ev, eps), _name(ev, eps)
            if same(t, ev) and max(tlo, elo) < min(thi, ehi):
                raise InputError(f"{tkey} ({tname}) overlaps {ekey} ({ename}): problems [{max(tlo, elo)}, "
                                 f"{min(thi, ehi)}) would be trained on and evaluated (contract 11); move one of them")
            shared = [(texts[k], p) for p in eps[elo:ehi] if (k := _text(p.question)) in texts]
            if shared:
                a, b = shared[0]
                raise InputError(f"{tkey} ({tname}) shares {len(shared)} question text(s) with {ekey} ({ename}), "
                                 f"e.g. {a.id} = {b.id}: {b.question[:80]!r} (contract 11); move one of them")


# ----------------------------------------------------------------------------- decontamination


def test_questions(cfg) -> list[Problem]:
    """What training problems are checked against: the evaluation slices (loaded as evaluation loads them)
    and every test set of the data root when there is one, less the training slices' own problems."""
    from mathdistill.data import DATASETS, load
    from mathdistill.methods.config import problems
    from mathdistill.paths import data_dir

    found = [p for s in cfg.data.eval for p in problems(s, cfg.data.data_dir)]
    root = data_dir(cfg.data.data_dir)
    if root is not None:
        found += [p for name, spec in DATASETS.items() if "test" in spec.files and (root / spec.files["test"]).is_file()
                  for p in load(name, "test", data_dir=root)]
    own = {(p.source, p.id) for _, s in cfg.training_slices() for p in problems(s, cfg.data.data_dir)}
    unique = {(p.source, p.id): p for p in found if (p.source, p.id) not in own}
    return list(unique.values())


_BUILT: dict[tuple, object] = {}  # the last index built: FDD checks new problems every round


def decontaminator(cfg):
    """The `data.decontam.Decontaminator` of a recipe: its rule over `test_questions(cfg)` (built once per
    process for the same test questions and rule)."""
    from mathdistill.data.decontam import Decontaminator

    tests = test_questions(cfg)
    key = (tuple((p.source, p.id, p.question) for p in tests), cfg.decontam.ngram, cfg.decontam.cosine)
    if key not in _BUILT:
        _BUILT.clear()
        _BUILT[key] = Decontaminator(tests, ngram=cfg.decontam.ngram, cosine=cfg.decontam.cosine)
    return _BUILT[key]


def decontaminate(run, cfg, problems: list[Problem]) -> list[Problem]:
    """Stage `decontaminate` (of the run's root folder: call it there): check `problems`, add the report's note
    and table, and return those kept (all of them with `data.decontaminate: false`)."""
    def make() -> dict:
        dc = decontaminator(cfg)
        rows = dc.check([p.question for p in problems])
        flagged = [{"id": p.id, "question": p.question, **r} for p, r in zip(problems, rows) if r["contaminated"]]
        tests: dict[str, int] = {}
        for t in dc.tests:
            tests[t.source] = tests.get(t.source, 0) + 1
        return {"checked": len(problems), "flagged": flagged, "cosines": [r["cosine"] for r in rows],
                "dropped": [f["id"] for f in flagged] if cfg.data.decontaminate else [],
                "ngram": cfg.decontam.ngram, "cosine": cfg.decontam.cosine, "tests": tests}

    value = run.stage(STAGE, make)
    _report(run, value)
    dropped = set(value["dropped"])
    if problems and len(dropped) == len(problems):
        raise InputError(f"all {len(problems)} training problems meet the decontamination rule against the test sets "
                         f"(e.g. {_item(value['flagged'][0]['ngram_item'] or value['flagged'][0]['nearest'])}): "
                         "nothing to train on; train on other problems, or set data.decontaminate: false")
    return [p for p in problems if p.id not in dropped]


def _report(run, value: dict) -> None:
    """The run's note (always, with the counts) and table (the problems that meet the rule, if any)."""
    n, flagged, dropped, gram = value["checked"], value["flagged"], value["dropped"], f"{value['ngram']}-gram"
    shared = sum(f["reason"] == gram for f in flagged)
    why = (f"{shared} share a word {gram} with a test question, {len(flagged) - shared} more have a TF-IDF cosine "
           f">= {value['cosine']:g} to one")
    against = (f"{sum(value['tests'].values()):,} test questions ({', '.join(value['tests'])}: the evaluation slices "
               "and the data root's test sets)")
    if dropped or not flagged:
        run.note(f"Decontamination: {len(dropped)} of {n} training problems dropped ({why}), checked against {against}")
    else:
        run.note(f"Decontamination off (data.decontaminate: false): {len(flagged)} of {n} training problems meet the "
                 f"rule ({why}) against {against}, and were trained on")
    if flagged:
        run.add_table("Decontamination: training problems that meet the rule", [
            {"problem": f["id"], "question": f["question"][:160], "reason": f["reason"], "cosine": f["cosine"],
             "nearest test item": _item(f["ngram_item"] or f["nearest"]), "shared n-gram": f["ngram"] or "",
             "dropped": "yes" if f["id"] in dropped else "no (data.decontaminate: false)"} for f in flagged])


def _item(item: dict | None) -> str:
    return f"{item['dataset']} {item['id']}: {item['question'][:120]}" if item else ""


def checked(run) -> dict | None:
    """The value of the run's `decontaminate` stage (checked, flagged, dropped, cosines, tests); None when it
    has not run in this folder."""
    entry = run.manifest.data["stages"].get(STAGE, {})
    out = Path(run.root) / "stages" / f"{STAGE}.json"
    return read_json(out)["value"] if entry.get("status") == "done" and out.is_file() else None


def check_rows(run, rows: list[dict], where: Path) -> None:
    """Refuse training rows of a problem decontamination dropped, or rows of a recipe that never ran it."""
    value = checked(run)
    if value is None:
        raise InputError(f"{where}: the recipe trains without the decontamination step: read the training problems "
                         "with steps.train_problems(run, cfg) (contract 11)")
    leaked = sorted({str(r.get("problem_id")) for r in rows} & set(value["dropped"]))
    if leaked:
        raise InputError(f"{where}: {len(leaked)} training row problem(s) were dropped by decontamination "
                         f"({', '.join(leaked[:5])}): read the training problems with steps.train_problems(run, cfg)")
