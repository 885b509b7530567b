"""KPDD (Zhu et al., 2024): the student writes the problem's key points, then the solution, in one pass.

    target:  Core question: ...  Key points: - ...  Solution: <CoT, or a program run in the sandbox>
    teach key points + solution (a teacher writes all three parts, `teach.samples` per problem; offline:
          the recorded plan-only rationales as key points, followed by each verified recorded CoT
          (`solution: cot`) or the verified reference program (`solution: pot`): one target per kept
          solution, all under the problem's key points)
    -> one LoRA -> answer in the `keypoints` format, scored on its solution part -> rows kpdd-cot, kpdd-pot
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mathdistill.methods import steps
from mathdistill.methods.config import DistillConfig
from mathdistill.methods.lorid import (PLANS, _yield_note, plans_stand_in, require_teacher_without_plans,
                                      teach_intermediate)
from mathdistill.thoughts.keypoints import KeyPoints


class KPDDConfig(DistillConfig):
    solution: Literal["cot", "pot"] = Field("cot", description="the solution part: cot (KPDD-CoT) or pot (KPDD-PoT)")
    plans: str | None = Field(PLANS, description="recorded plan-only rationales standing in for the key points "
                                                  "(offline); null: a teacher writes all parts (teach.per_thought.keypoints)")

    @model_validator(mode="after")
    def _check(self):
        self.thoughts = [self.solution]  # the format whose verified rationales become the solution part
        require_teacher_without_plans(self, "keypoints", "key-point")
        if self.data.calc_marks != "none":
            raise ValueError("data.calc_marks: KPDD's rows do not take calculation marks (cot, etd, fdd, lorid do)")
        return self


def recipe(cfg: KPDDConfig, run) -> list[dict]:
    problems = steps.train_problems(run, cfg)
    fmt = KeyPoints(solution=cfg.solution)
    solutions: dict[str, list[str]] = {}  # every kept solution of a problem (teach.samples of them at most)
    if cfg.plans is not None:
        steps.teach(run, cfg, problems, [cfg.solution])
        for r in steps.rationales(run, cfg.solution):
            if r["kept"]:
                solutions.setdefault(r["problem_id"], []).append(r["text"])
    why = plans_stand_in(cfg, "key points: their steps, not the facts of the problem KPDD extracts")
    kp = teach_intermediate(run, cfg, problems, fmt, lambda p, plan: [
        KeyPoints.compose(KeyPoints.from_recorded(plan, p.question), s) for s in solutions.get(p.id) or [""]],
        why, samples=cfg.teach.samples)
    if cfg.plans is not None:
        run.note(f"Offline stand-in: {why}; the solution part is the verified "
                 + ("recorded Llama-3-70B CoT." if cfg.solution == "cot" else "reference program (GSM8K gold solution "
                    "converted to Python, executed in the sandbox)."))
    run.note(_yield_note(kp, f"Key points + {cfg.solution} solution"))
    steps.data(run, ["keypoints"])
    train = steps.train(run, cfg)
    return run.stage("eval", lambda: steps.evaluate(run, cfg, f"kpdd-{cfg.solution}", run.path("train", "student"),
                                                     ["keypoints"], train=train))


def workload(cfg: KPDDConfig, w) -> None:
    from mathdistill.workload import TOKENS

    solution = TOKENS[cfg.solution][1]  # a row is the key points, then the solution
    w.train("train", {"keypoints": w.train_problems * cfg.teach.samples}, cfg, extra_tokens=solution)
    w.evaluate("eval", cfg, ["keypoints"], extra_tokens=solution)


def _method():
    from mathdistill.methods import Method

    return Method("kpdd", KPDDConfig, recipe, "KPDD: key points (core question, facts) then the solution, CoT or PoT",
                  workload=workload)


METHODS = [_method()]
