"""Distillation recipes: one readable file per method, composing the shared stages."""

from mathdistill.methods import etd

#: method name (recipe `method:`) -> recipe entry point run(cfg, command, restart) -> run folder
METHODS = {"cot": etd.run, "eotd": etd.run, "pot": etd.run, "etd": etd.run}
