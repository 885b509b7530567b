"""Moved: model loading is `mathdistill.models` (below the teacher and the student, which both load models).

This name stays only for the modules issue 27's second phase updates (student/train.py, student/sample.py and
the speed benchmarks, rewritten meanwhile for issue 26); new code imports `mathdistill.models`.
"""

from mathdistill.models import *  # noqa: F401,F403
