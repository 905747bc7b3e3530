"""Make ``evaluate.load("clap_kld")`` find musicpeft's metric by its bare name, offline.

How evaluate resolves a name (``evaluate/loading.py``, ``evaluation_module_factory``, 0.4.x):

1. ``<name>/<name>.py`` relative to the working directory, or a path to a script: loaded locally;
2. otherwise, a name without "/" is tried on the Hub as ``evaluate-metric/<name>``, then
   ``evaluate-comparison/<name>`` and ``evaluate-measurement/<name>`` (a Space download);
3. if that fails (offline, or no such Space), the newest copy in evaluate's module cache
   (``$HF_MODULES_CACHE/evaluate_modules/metrics/evaluate-metric--<name>/<hash>/``) is used.

A third-party metric is none of these, so there is no offline way in without help. The
mechanism here is one wrapper around ``evaluate.loading.evaluation_module_factory``: for a
registered bare name that is not a local path, it answers with the importable module that
defines the metric (``musicpeft.metrics.clap_kld``) instead of going to the Hub; every other
name goes to evaluate unchanged. ``evaluate.load`` then imports that module and instantiates its
metric class as usual. Nothing is written to the module cache and nothing is downloaded.

Precedence: a local ``clap_kld/clap_kld.py`` folder in the working directory still wins (as in
evaluate); then the registered name; then evaluate's own Hub / cache lookup.

Importing evaluate costs seconds (it imports datasets and torch), so registering does not import
it: if evaluate is not imported yet, a one-shot import hook wraps the factory the moment
``evaluate.loading`` is first imported.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.abc
import importlib.util
import os
import sys

_REGISTERED: dict[str, str] = {}  # bare metric name -> importable module defining its evaluate.Metric
_LOADING = "evaluate.loading"


def registered_metrics() -> dict[str, str]:
    """The bare names musicpeft answers for, and the modules that define them."""
    return dict(_REGISTERED)


def _module_hash(module: str) -> str:
    """evaluate identifies a module version by a hash of its code; use the defining file's sha256."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"metric module {module!r} cannot be found")
    with open(spec.origin, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _local_path_exists(path: str) -> bool:
    name = path.rstrip("/").split("/")[-1]
    return os.path.isfile(path) or os.path.isfile(os.path.join(path, name + ".py"))


def _wrap(loading) -> None:
    """Wrap ``loading.evaluation_module_factory`` once so registered bare names resolve to their module."""
    original = loading.evaluation_module_factory
    if getattr(original, "_musicpeft_wrapped", False):
        return

    @functools.wraps(original)
    def evaluation_module_factory(path, module_type=None, *args, **kwargs):
        module = _REGISTERED.get(path) if isinstance(path, str) else None
        if (
            module is not None
            and module_type in (None, "metric")
            and not kwargs.get("force_local_path")
            and not _local_path_exists(path)
        ):
            return loading.ImportableModule(module, _module_hash(module))
        return original(path, module_type, *args, **kwargs)

    evaluation_module_factory._musicpeft_wrapped = True
    loading.evaluation_module_factory = evaluation_module_factory


class _WrapOnImport(importlib.abc.MetaPathFinder):
    """One-shot import hook: when ``evaluate.loading`` is imported, wrap its factory right after it executes."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _LOADING:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _WrappingLoader(spec.loader, self)
        return spec


class _WrappingLoader(importlib.abc.Loader):
    def __init__(self, loader, finder):
        self._loader = loader
        self._finder = finder

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _wrap(module)
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)

    def __getattr__(self, name):  # get_source, get_filename, ... for tracebacks and inspect
        return getattr(self._loader, name)


def register_metric(name: str, module: str) -> None:
    """Let ``evaluate.load(name)`` load the ``evaluate.Metric`` defined in ``module`` (idempotent, cheap)."""
    if "/" in name or not name:
        raise ValueError(f"register_metric: name must be a bare metric name without '/', got {name!r}")
    _REGISTERED[name] = module
    loading = sys.modules.get(_LOADING)
    if loading is not None:
        _wrap(loading)
    elif not any(isinstance(f, _WrapOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _WrapOnImport())


def register_clap_kld() -> None:
    """Make ``evaluate.load("clap_kld")`` resolve to :mod:`musicpeft.metrics.clap_kld`, offline.

    Called by ``import musicpeft``; safe to call again. Does not import evaluate or torch.
    """
    register_metric("clap_kld", "musicpeft.metrics.clap_kld")
