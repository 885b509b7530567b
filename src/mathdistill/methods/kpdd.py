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
from mathdistill.methods.config import PLANS, DistillConfig, require_teacher_without_plans
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
    why = steps.plans_stand_in(cfg, "key points: their steps, not the facts of the problem KPDD extracts")
    kp = steps.teach_derived(run, cfg, problems, fmt, lambda p, plan: [
        KeyPoints.compose(KeyPoints.from_recorded(plan, p.question), s) for s in solutions.get(p.id) or [""]],
        why, samples=cfg.teach.samples)
    if cfg.plans is not None:
        run.note(f"Offline stand-in: {why}; the solution part is the verified "
                 + ("recorded Llama-3-70B CoT." if cfg.solution == "cot" else "reference program (GSM8K gold solution "
                    "converted to Python, executed in the sandbox)."))
    run.note(steps.yield_note(kp, f"Key points + {cfg.solution} solution"))
    steps.data(run, ["keypoints"])
    train = steps.train(run, cfg)
    return run.stage("eval", lambda: steps.evaluate(run, cfg, f"kpdd-{cfg.solution}", run.path("train", "student"),
                                                     ["keypoints"], train=train))


def workload(cfg: KPDDConfig, w) -> None:
    from mathdistill.workload import TOKENS

    solution = TOKENS[cfg.solution][1]  # a row is the key points, then the solution
    w.train("train", {"keypoints": w.train_problems * cfg.teach.samples}, cfg, extra_tokens=solution)
    w.evaluate("eval", cfg, ["keypoints"], extra_tokens=solution)


def teaches(cfg: KPDDConfig) -> list[str]:
    """With the recorded plans: the solution's format (its verified rationales follow the derived key points);
    without: `keypoints`, all three parts from one teacher."""
    return [cfg.solution] if cfg.plans is not None else ["keypoints"]


def teacher_plan(cfg: KPDDConfig, problems: list) -> list:
    """The solution's teach stage (with the recorded plans), then teach-keypoints (derived from the plans, or a
    teacher's: one per problem)."""
    solution = [steps.teach_stage(cfg, t, problems, cfg.teach.samples) for t in cfg.thoughts] if cfg.plans else []
    return solution + [steps.teach_stage(cfg, KeyPoints(solution=cfg.solution), problems, 1, plans=cfg.plans)]
