"""How a student is evaluated: the settings every recipe's `eval:` section starts from and the `mathdistill eval`
command is built from (its options' defaults, help and bounds: `runtime.config_option`), so the two agree.

    EvalConfig()                        # max_new_tokens 256, greedy, one sample, zero-shot, loop stop on
    EvalConfig(max_new_tokens=320)      # a recipe or an option says otherwise
    sample(model, tok, problems, "pot", k=4, **cfg.eval.generation(temperature=0.7))   # the rest from the config

A recipe's config extends it (`methods.config.VoteEvalConfig`: + the vote over formats); the command adds
what is not a recipe's (the model, the dataset, the output folder). `generation()` hands the settings every
generation call of a recipe takes from it (evaluation, sampling, a method's own calls) to `eval.evaluate`,
`student.sample.sample` and the like as keywords, so none of them unpacks the config by hand.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    max_new_tokens: int = Field(256, ge=1, description="most tokens generated per completion")
    batch_size: int = Field(16, ge=1, description="completions generated together")
    temperature: float = Field(0.0, ge=0, description="sampling temperature; 0: greedy")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass in (0, 1] (with temperature > 0)")
    samples: int = Field(1, ge=1, description="completions per problem; >1 scores their majority vote")
    shots: int = Field(0, ge=0, description="k-shot exemplars from GSM8K train before each question")
    loop_stop: bool = Field(True, description="end a completion that repeats one block 3 times in a row")
    base: bool = Field(False, description="also evaluate the untrained student")
    calculator: bool | Literal["both"] = Field(
        False, description="calculator decoding: force the value of every arithmetic step the student writes "
                           "(`a op b =`); rows are named `<row>+calc`. `both`: each test set without and with it, "
                           "same weights (rows `<row>` and `<row>+calc`)")

    def generation(self, **overrides: Any) -> dict:
        """The keywords of a generation call (`eval.evaluate`, `eval.chosen.evaluate_chosen`, `student.sample.sample`)
        that come from this config: max_new_tokens, batch_size, temperature, top_p, loop_stop; an override that is
        not None replaces its setting (a method's own temperature, a role's token limit; None: the config's)."""
        unknown = sorted(set(overrides) - set(GENERATION))
        if unknown:
            raise TypeError(f"generation(): {', '.join(unknown)} is not one of {', '.join(GENERATION)}")
        return {name: overrides[name] if overrides.get(name) is not None else getattr(self, name)
                for name in GENERATION}


#: EvalConfig's settings that every generation call takes (`EvalConfig.generation`)
GENERATION = ("max_new_tokens", "batch_size", "temperature", "top_p", "loop_stop")
