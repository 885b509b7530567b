"""LoRID / KPDD teacher side offline, without a model: the recorded plans turned into knowledge and
key points + solutions, validated by the formats, with their yield; the Deep Reasoner's rows; configs."""

from __future__ import annotations

import json

import pytest

from mathdistill.io import InputError, read_jsonl
from mathdistill.methods import steps
from mathdistill.methods.config import dump_config
from mathdistill.methods.lorid import KNOWLEDGE, dr_rows
from mathdistill.methods.registry import METHODS, load_config
from mathdistill.methods.run import Run
from mathdistill.methods.runner import validate
from mathdistill.thoughts.keypoints import KeyPoints, parse
from mathdistill.thoughts.knowledge import Knowledge

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
N = 40


def open_run(tmp_path, data_dir, recipe: str, *overrides: str):
    cfg = load_config(ROOT / "recipes" / recipe, [f"runs_dir={tmp_path}", f"data.train.limit={N}",
                                                  f"data.data_dir={data_dir}", *overrides])
    validate(cfg)
    return cfg, Run.open(cfg.run_dir, dump_config(cfg), ["test"]), steps.problems(cfg.data.train, cfg.data.data_dir)


def test_knowledge_from_recorded_plans(tmp_path, data_dir):
    cfg, run, problems = open_run(tmp_path, data_dir, "lorid.yaml")
    steps.teach(run, cfg, problems, ["cot"])
    s = steps.teach_derived(run, cfg, problems, KNOWLEDGE, lambda p, plan: Knowledge.from_recorded(plan), "why")
    rows = read_jsonl(run.path("teach", "knowledge", "rationales.jsonl"))
    assert s["problems"] == len(rows) == N and s["offline_stand_in"] == "why"
    assert s["source"]["plans"] == "gsm8k_train_gemini-1.5-flash_plan.json" and s["source"]["recorded"] >= N - 2
    assert "replay: gsm8k_train_gemini-1.5-flash_plan.knowledge.json" in s["teacher"]
    kept = [r for r in rows if r["kept"]]
    assert 0.5 * N < len(kept) == s["kept"] < N and s["yield"] == round(len(kept) / N, 4)
    assert all(r["text"].startswith("Knowledge:\n- ") and "answer is" not in r["text"].lower() for r in kept)
    dropped = {r["error"] for r in rows if not r["kept"]}
    assert dropped <= {"knowledge states the answer", "empty knowledge"} | {e for e in dropped if e.startswith("replay miss")}
    assert "knowledge states the answer" in dropped
    q = s["question_numbers"]
    assert q["items"] >= len(kept) and 0 < q["quoting"] < q["items"] and q["share"] == round(q["quoting"] / q["items"], 4)
    assert json.loads(run.path("teach", "knowledge", "summary.json").read_text())["question_numbers"] == q

    dr = dr_rows(run)
    cot = {r["problem_id"]: r["text"] for r in steps.rationales(run, "cot") if r["kept"]}
    know = {r["problem_id"]: r["text"] for r in kept}
    assert [r["problem_id"] for r in dr] == [p.id for p in problems if p.id in cot and p.id in know]
    first = dr[0]
    assert first["prompt"] == KNOWLEDGE.reasoning_prompt(problems[0].question, know[first["problem_id"]], "cot")
    assert "Knowledge:\n- " in first["prompt"] and first["prompt"].endswith(
        "[CoT] Think step by step, then finish with \"The answer is <number>\".")
    assert first["completion"] == cot[first["problem_id"]].strip()


def test_key_points_from_recorded_plans_with_verified_programs(tmp_path, data_dir):
    cfg, run, problems = open_run(tmp_path, data_dir, "kpdd.yaml", "solution=pot")
    assert cfg.thoughts == ["pot"]
    steps.teach(run, cfg, problems, ["pot"])  # the reference programs, verified in the sandbox
    programs = {r["problem_id"]: r["text"] for r in steps.rationales(run, "pot") if r["kept"]}
    fmt = KeyPoints(solution="pot")
    s = steps.teach_derived(run, cfg, problems, fmt, lambda p, plan: KeyPoints.compose(
        KeyPoints.from_recorded(plan, p.question), programs.get(p.id, "")), "why")
    rows = {r["problem_id"]: r for r in read_jsonl(run.path("teach", "keypoints", "rationales.jsonl"))}
    kept = [r for r in rows.values() if r["kept"]]
    assert s["kept"] == len(kept) > N // 3 and "question_numbers" not in s
    for r in kept:
        p = parse(r["text"])
        assert p["core_question"] and p["key_points"] and p["solution"] == programs[r["problem_id"]].strip()
        assert r["prediction"] is not None and r["correct"]
    missing = [rows[pid] for pid in rows if pid not in programs]
    assert missing and not any(r["kept"] for r in missing)  # no verified program: no target
    assert "no solution part" in {r["error"] for r in missing}


def test_configs_are_checked(tmp_path):
    with pytest.raises(InputError, match="thoughts must be \\[cot\\]"):
        load_config(ROOT / "recipes" / "lorid.yaml", ["thoughts=[pot]"])
    with pytest.raises(InputError, match="plans is null: set a knowledge teacher"):
        load_config(ROOT / "recipes" / "lorid.yaml", ["plans=null"])
    with pytest.raises(InputError, match="loop.fallback"):
        load_config(ROOT / "recipes" / "lorid.yaml", ["loop.fallback=vote"])
    with pytest.raises(InputError, match="leave eval.samples"):
        load_config(ROOT / "recipes" / "lorid.yaml", ["eval.samples=4"])
    with pytest.raises(InputError, match="plans is null: set a key-point teacher"):
        load_config(ROOT / "recipes" / "kpdd.yaml", ["plans=null"])
    ok = load_config(ROOT / "recipes" / "kpdd.yaml", ["plans=null", "teach.per_thought.keypoints={kind: openai, url: "
                                                      "'http://127.0.0.1:1/v1', model: m}"])
    assert ok.plans is None and ok.thoughts == ["cot"]
    assert {"lorid", "kpdd"} <= set(METHODS)


def test_lorid_presets_the_paper_s_protocol_by_default_and_greedy_first_by_name():
    """predict.sh: IR, KG and DR at T 1.5 / top-p 0.9 from the first iteration, 20 iterations, unresolved wrong."""
    import yaml

    def loop(*over, recipe="lorid.yaml"):
        return load_config(ROOT / "recipes" / recipe, list(over)).loop

    def roles(lp):
        return {(r.temperature, r.top_p) for r in (lp.ir, lp.kg, lp.dr)}

    paper = loop()
    assert (paper.preset, paper.max_iterations, paper.first_greedy, paper.fallback, paper.agreement) == (
        "paper", 20, False, "abstain", "any")
    assert roles(paper) == {(1.5, 0.9)}
    assert dump_config(load_config(ROOT / "recipes" / "lorid.yaml"))["loop"]["ir"] == {"temperature": 1.5, "top_p": 0.9}
    old = loop("loop.preset=greedy-first")
    assert (old.first_greedy, old.fallback, roles(old)) == (True, "majority", {(0.7, 0.9)})
    mixed = loop("loop.fallback=majority", "loop.dr.temperature=1.0")  # a key set in the recipe wins over the preset
    assert (mixed.first_greedy, mixed.fallback, mixed.dr.temperature, mixed.dr.top_p, mixed.ir.temperature) == (
        False, "majority", 1.0, 0.9, 1.5)
    from mathdistill.methods.lorid import LoopConfig

    assert LoopConfig().preset == "paper" and roles(LoopConfig()) == {(1.5, 0.9)}
    with pytest.raises(InputError, match="loop.preset"):
        loop("loop.preset=greedy")
    # the CPU profile keeps the protocol its recorded rows were measured with; the real-scale profile is the paper's
    exp = yaml.safe_load((ROOT / "benchmarks" / "experiments" / "lorid.yaml").read_text())
    assert loop(*exp["overrides"]).preset == "greedy-first"
    scale = yaml.safe_load((ROOT / "benchmarks" / "scale.yaml").read_text())["methods"]["lorid"]["gpu"]
    assert loop(*exp["overrides"], *scale).preset == "paper" and loop(*exp["overrides"], *scale).max_iterations == 20


def test_lorid_trains_the_adapter_measured_for_the_student_and_recipes_shows_the_paper_s_defaults():
    import yaml

    from mathdistill.methods.config import describe

    shown = {k: d for k, d, _ in describe(METHODS["lorid"])}
    assert (shown["loop.preset"], shown["loop.first_greedy"], shown["loop.fallback"]) == ("paper", "false", "abstain")
    assert (shown["loop.ir.temperature"], shown["loop.kg.top_p"], shown["loop.max_iterations"]) == ("1.5", "0.9", "20")
    assert (shown["train.lora_r"], shown["train.lora_alpha"], shown["train.target_modules"], shown["train.epochs"]) == (
        "64", "128", "all-linear", "5.0")

    def train(*over):
        t = load_config(ROOT / "recipes" / "lorid.yaml", list(over)).train
        return t.lora_r, t.lora_alpha, t.target_modules, t.lr, t.epochs

    assert train() == (64, 128, "all-linear", 3e-4, 1)
    exp = yaml.safe_load((ROOT / "benchmarks" / "experiments" / "lorid.yaml").read_text())["overrides"]
    assert train(*exp)[:2] == (16, 32)  # what the CPU profile's recorded rows were trained with
    scale = yaml.safe_load((ROOT / "benchmarks" / "scale.yaml").read_text())["methods"]["lorid"]["gpu"]
    assert train(*exp, *scale)[:2] == (64, 128)


def test_dr_targets_take_the_calculation_marks_ir_targets_take(tmp_path, data_dir):
    cfg, run, problems = open_run(tmp_path, data_dir, "lorid.yaml", "data.calc_marks=add")
    steps.teach(run, cfg, problems, ["cot"])
    steps.teach_derived(run, cfg, problems, KNOWLEDGE, lambda p, plan: Knowledge.from_recorded(plan), "why")
    steps.data(run, ["cot"], name="data-ir", calc_marks=cfg.data.calc_marks)
    ir = {r["problem_id"]: r["completion"] for r in read_jsonl(run.path("data-ir", "train.jsonl"))}
    dr = {r["problem_id"]: r["completion"] for r in dr_rows(run, cfg.data.calc_marks)}
    assert dr and all(dr[pid] == ir[pid] for pid in dr)
    marked = [pid for pid in dr if "<<" in dr[pid]]
    assert len(marked) > len(dr) // 2  # the marks are really there (a wrapped `a op b = c` step)
    plain = {r["problem_id"]: r["completion"] for r in dr_rows(run)}
    assert all(plain[pid] != dr[pid] and "<<" not in plain[pid] for pid in marked)


def test_kpdd_keeps_every_kept_solution_of_a_problem(tmp_path, data_dir, monkeypatch):
    """teach.samples 2 with both recorded CoT teachers: each kept solution becomes a target under the problem's
    key points (before, a dict kept the last one alone)."""
    from mathdistill.methods import kpdd

    both = "[teacher/gsm8k_train_llama3-70b_cot.json, teacher/gsm8k_train_gemini-1.5-flash_cot.json]"
    cfg, run, _ = open_run(tmp_path, data_dir, "kpdd.yaml", "teach.samples=2",
                           f"teach.per_thought.cot={{kind: replay, replay: {both}}}")
    trained = {}
    monkeypatch.setattr(steps, "train", lambda run_, cfg_, *a, **kw: trained.update(
        rows=read_jsonl(run_.path("data", "train.jsonl"))) or {})
    monkeypatch.setattr(steps, "evaluate", lambda *a, **kw: [])
    kpdd.recipe(cfg, run)
    solutions = {}
    for r in steps.rationales(run, "cot"):
        if r["kept"]:
            solutions.setdefault(r["problem_id"], []).append(r["text"].strip())
    assert sum(len(v) == 2 for v in solutions.values()) > N // 2  # most problems have two kept solutions
    got = {}
    for r in read_jsonl(run.path("teach", "keypoints", "rationales.jsonl")):
        if r["kept"]:
            got.setdefault(r["problem_id"], []).append(parse(r["text"])["solution"])
    assert len(got) > N // 3 and got == {pid: solutions[pid] for pid in got}
    assert sum(len(v) == 2 for v in got.values()) > len(got) // 2
    assert len(trained["rows"]) == sum(map(len, got.values()))


def test_kpdd_asks_a_live_teacher_for_teach_samples_per_problem(tmp_path, data_dir):
    """plans null: the teacher writes key points + solution, `teach.samples` times per problem (once before)."""
    from fake_server import FakeServer

    from mathdistill.data import load
    from mathdistill.teacher.backends import normalize_question
    from mathdistill.thoughts.keypoints import core_question

    gold = {normalize_question(p.question): p for p in load("gsm8k", "train", data_dir=data_dir)[:N]}

    def reply(body):
        p = gold[normalize_question(body["messages"][-1]["content"])]
        return (f"Core question: {core_question(p.question)}\nKey points:\n- The quantities given.\nSolution:\n"
                f"Way {body.get('seed')}: we combine them.\nThe answer is {p.answer}.")

    with FakeServer(reply=reply) as server:
        live = f"{{kind: openai, url: '{server.url}', model: fake-teacher, max_retries: 0}}"
        cfg, run, problems = open_run(tmp_path, data_dir, "kpdd.yaml", "plans=null", "teach.samples=2",
                                      f"teach.per_thought.keypoints={live}")
        s = steps.teach_derived(run, cfg, problems, KeyPoints(solution="cot"), None, "why", samples=cfg.teach.samples)
        assert server.count() == 2 * N
    rows = read_jsonl(run.path("teach", "keypoints", "rationales.jsonl"))
    assert len(rows) == 2 * N and s["kept"] == 2 * N and {r["sample"] for r in rows} == {0, 1}


@pytest.mark.parametrize("recipe,overrides,rows", [("lorid.yaml", [], ["lorid"]), ("kpdd.yaml", ["solution=pot"], ["kpdd-pot"]),
                                                    ("kpdd.yaml", ["solution=cot"], ["kpdd-cot"])])
def test_offline_recipes_label_the_stand_in(tmp_path, data_dir, monkeypatch, recipe, overrides, rows):
    """The recipes up to training (training and evaluation replaced by recorders): the notes that go into
    results.json and the report say that recorded plans stood in, with the yield (and for LoRID the share
    of knowledge items quoting a question's number); each adapter gets its own data."""
    from mathdistill.methods import kpdd, lorid

    cfg, run, _ = open_run(tmp_path, data_dir, recipe, *overrides)
    trained = {}

    def fake_train(run_, cfg_, adapter="student", data_file=None, stage=None, **kw):
        trained[adapter] = read_jsonl(data_file or run_.path("data", "train.jsonl"))
        return {"seconds": 0, "steps": 0, "tokens": 0}

    monkeypatch.setattr(steps, "train", fake_train)
    monkeypatch.setattr(lorid, "evaluate", lambda run_, cfg_, train: [{"method": "lorid"}])
    monkeypatch.setattr(steps, "evaluate", lambda run_, cfg_, name, *a, **kw: [{"method": name}])
    module = lorid if recipe == "lorid.yaml" else kpdd
    assert [r["method"] for r in module.recipe(cfg, run)] == rows
    notes = run.extras()["notes"]
    assert any(n.startswith("Offline stand-in: recorded Gemini-1.5-Flash plan-only rationales") for n in notes)
    if recipe == "lorid.yaml":
        assert any("knowledge items" in n and "quote a number from their question" in n and "training problems kept" in n
                   for n in notes)
        assert list(trained) == ["ir", "kg", "dr"]
        kept = {r["problem_id"] for r in steps.rationales(run, "knowledge") if r["kept"]}
        # N - 1: decontamination drops gsm8k-train-20 (a 13-gram of GSM8K test 632) before anything is taught
        assert len(trained["ir"]) == N - 1 and len(trained["kg"]) == len(kept) and len(trained["dr"]) <= len(kept)
        assert all(r["completion"].startswith("Knowledge:\n- ") for r in trained["kg"])
        assert all("Knowledge:\n- " in r["prompt"] and r["thought"] == "cot" for r in trained["dr"])
    else:
        solution = cfg.solution
        assert any(f"Key points + {solution} solution:" in n for n in notes)
        assert any(("reference program" if solution == "pot" else "recorded Llama-3-70B CoT") in n for n in notes)
        assert list(trained) == ["student"] and all(r["completion"].startswith("Core question:") for r in trained["student"])
