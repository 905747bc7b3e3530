"""The ``clap_kld`` metric as an evaluate module folder (Hugging Face Space layout).

``evaluate.load("path/to/metrics/clap_kld")`` copies this file into evaluate's module cache and
imports it; the implementation lives in the musicpeft package (listed in requirements.txt), so
this file only has to expose the metric class. ``evaluate.load("clap_kld")`` by bare name works
after ``import musicpeft`` without this folder (see docs/evaluation.md).
"""

from musicpeft.metrics.clap_kld import ClapKld

__all__ = ["ClapKld"]
