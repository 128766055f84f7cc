"""Offline scoring: per-document log-likelihoods under a teacher or reference LM.

    corpusdb score demo/db --model out/teacher --as teacher
"""

from corpusdb.scoring.job import ScoreReport, run_score
from corpusdb.scoring.model import LoadedModel, load_model

__all__ = ["LoadedModel", "ScoreReport", "load_model", "run_score"]
