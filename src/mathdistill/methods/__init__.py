"""Distillation methods: each one short recipe file wiring the shared components, declared once in the registry.

    from mathdistill.methods.registry import METHODS, load_config
    from mathdistill.methods.runner import run
    cfg = load_config("recipes/etd.yaml", ["data.train.limit=100"])
    run(cfg)                                   # -> the run folder

    config.py      the config classes every method's inherits (RecipeConfig -> DistillConfig -> ...), validation
    run.py         run folders: resumable stages and scopes, the manifest (`Run`)
    steps.py       the stages recipes share (teach, data, train, evaluate, scopes, derived teaching, ...)
    serving.py     how a run is served: the inferences (Single, Vote, ...) and `Served`, the default serving
    base.py, etd.py, fdd.py, kpdd.py, lorid.py, siked.py     one recipe file per method (its config, recipe,
                   serving, figures); none imports the registry
    registry.py    every method declared once (`Method`), + those of the `mathdistill.methods` entry points
    runner.py      `run(cfg)`: validate, open the run folder, run the recipe, results.json, the report
    plan.py        `--plan`: what a recipe asks of its teachers and its student, before it runs
    leakage.py, provenance.py     contract 11 (no training on what is evaluated) and contract 9 (where data came from)
    cli.py         `mathdistill run`, `mathdistill recipes`
"""
