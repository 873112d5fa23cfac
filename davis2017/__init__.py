"""DAVIS-2017 evaluation: J, F and J&F with the official definitions, computed fast."""
from davis2017.evaluation import DAVISEvaluation, EvaluationResult, ObjectResult
from davis2017.metrics import db_eval_boundary, db_eval_iou, db_statistics

__all__ = [
    "DAVISEvaluation",
    "EvaluationResult",
    "ObjectResult",
    "db_eval_boundary",
    "db_eval_iou",
    "db_statistics",
]
