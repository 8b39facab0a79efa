"""The search: which student, depth, width, low rank and precision is fastest inside the budgets.

    space.py          the choices (SearchSpace, Config), default_space(profile), parse_duration("30m")
    budgets.py        Budgets (refused in one line when impossible), the objective, the Pareto front
    study.py          run_search(evaluate, space, ...): Optuna TPE + successive halving, resumable
    latency_model.py  LatencyModel: latency from MACs and layers, fitted on device measurements

Optuna is imported only when a search runs.
"""
from .budgets import Budgets, Evaluation, objective, pareto_front
from .latency_model import LatencyModel, LatencyPoint, points_from_report
from .space import Config, SearchSpace, default_space, parse_duration
from .study import EvaluationJournal, SearchResult, TrialRecord, choose, run_search

__all__ = ["Budgets", "Config", "Evaluation", "EvaluationJournal", "LatencyModel", "LatencyPoint", "SearchResult",
           "SearchSpace", "TrialRecord", "choose", "default_space", "objective",
           "pareto_front", "parse_duration", "points_from_report", "run_search"]
