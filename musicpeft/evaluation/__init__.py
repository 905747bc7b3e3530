"""Evaluation: a base and its adapters generating the same prompts with the same seeds, scored and reported.

``runner`` is what ``musicpeft evaluate`` runs (arguments, checks, scoring, the report); ``generation`` loads
adapters onto one base and generates clips in batches with per-prompt seeds; ``prompt_sets`` reads prompt
files; ``report`` writes the Markdown/JSON report; ``micro_world`` scores concepts on the trained tiny models
(the demo, examples and quality benchmark).
"""

from .runner import (
    BASELINE,
    TINY_CLAP,
    TINY_CLAP_TRAINED,
    EvaluateArguments,
    Scoring,
    format_summary,
    parse_adapters,
    prepare_scoring,
    run_evaluation,
    score_clips,
)

__all__ = [
    "BASELINE",
    "TINY_CLAP",
    "TINY_CLAP_TRAINED",
    "EvaluateArguments",
    "Scoring",
    "format_summary",
    "parse_adapters",
    "prepare_scoring",
    "run_evaluation",
    "score_clips",
]
