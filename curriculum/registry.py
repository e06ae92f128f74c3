"""Registry of custom guard functions.

A custom guard function is plain Python the user ships next to the spec (never text inside
the spec)::

    from curriculum.registry import register_guard

    @register_guard()
    def reward_stalled(view, metric, n):
        w = view.window(metric, int(n))
        return len(w) >= n and float(w.max() - w.min()) < 1.0

It is called as ``fn(view, *args)``: ``view`` is the :class:`curriculum.windows.MetricHistory`,
numbers arrive as floats, strings as str, metric identifiers as the metric name (a str).  It
returns a bool or a float.  Specs name the modules to import in their ``guard_modules`` list;
:func:`import_guard_modules` imports them (dotted module names or ``.py`` paths relative to the
spec's folder).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import importlib.util
import re
import sys
import threading
import warnings
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from curriculum.expr import BUILTIN_FUNCTIONS

F = TypeVar("F", bound=Callable[..., object])

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED = BUILTIN_FUNCTIONS | {"and", "or", "not"}

_lock = threading.RLock()
_functions: dict[str, Callable[..., object]] = {}
_rewards: dict[str, object] = {}  # name -> curriculum.rewarding.RewardDef
#: packages whose import registers built-in rewards (looked up when a name is not registered)
BUILTIN_REWARD_PROVIDERS: tuple[str, ...] = ("rewards.builtin",)


class GuardImportError(ImportError):
    """A guard module named by a spec could not be imported."""

    def __init__(self, module: str, message: str):
        self.module = module
        super().__init__(f"cannot import guard module '{module}': {message}")


def _validate_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"guard function name must be an identifier (letters, digits, _), got {name!r}"
        )
    if name in _RESERVED:
        raise ValueError(f"'{name}' is a built-in guard function name and cannot be registered")


def _decorated_name(what: str, name: str | None, fn: object) -> object:
    if not callable(fn):
        raise TypeError(f"{what} expects a callable, got {type(fn).__name__}")
    return name if name is not None else getattr(fn, "__name__", None)


def register_guard(name: str | None = None) -> Callable[[F], F]:
    """Decorator registering ``fn(view, *args) -> bool | float`` under ``name``.

    ``name`` defaults to the function's ``__name__``.  Registering a *different* callable under
    a taken name warns (:class:`UserWarning`) and replaces it; re-registering the same callable
    (e.g. a module imported twice) is silent.
    """
    if callable(name) and not isinstance(name, str):
        raise TypeError("use @register_guard() (with parentheses) or @register_guard('name')")

    def deco(fn: F) -> F:
        key = _decorated_name("register_guard", name, fn)
        _validate_name(key)  # type: ignore[arg-type]
        with _lock:
            old = _functions.get(key)  # type: ignore[arg-type]
            if old is not None and old is not fn and not _same_function(old, fn):
                warnings.warn(
                    f"guard function '{key}' was already registered "
                    f"({_where(old)}); replacing it with {_where(fn)}",
                    UserWarning,
                    stacklevel=2,
                )
            _functions[key] = fn  # type: ignore[index]
        return fn

    return deco


def _where(fn: Callable[..., object]) -> str:
    mod = getattr(fn, "__module__", "?")
    qual = getattr(fn, "__qualname__", repr(fn))
    return f"{mod}.{qual}"


def _same_function(a: Callable[..., object], b: Callable[..., object]) -> bool:
    """The same source function re-created by a re-import (same module, name and code)."""
    ca, cb = getattr(a, "__code__", None), getattr(b, "__code__", None)
    if ca is None or cb is None:
        return False
    return (
        _where(a) == _where(b)
        and ca.co_code == cb.co_code
        and ca.co_consts == cb.co_consts
        and ca.co_filename == cb.co_filename
    )


@contextlib.contextmanager
def scoped() -> Iterator[None]:
    """``with registry.scoped():`` registrations made inside are undone on exit (for tests:
    register a guard, use it, and leave the process-wide registry as it was)."""
    with _lock:
        saved = dict(_functions)
        saved_rewards = dict(_rewards)
    try:
        yield
    finally:
        with _lock:
            _functions.clear()
            _functions.update(saved)
            _rewards.clear()
            _rewards.update(saved_rewards)


def unregister_guard(name: str) -> None:
    """Remove ``name`` (no error if absent); mainly for tests."""
    with _lock:
        _functions.pop(name, None)


def _hint(name: str, names: list[str]) -> tuple[str, str]:
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return (f"; did you mean '{close[0]}'?" if close else ""), (", ".join(sorted(names)) or "none registered")


def get_guard_function(name: str) -> Callable[..., object]:
    """The function registered under ``name``; KeyError (with a suggestion) if none."""
    with _lock:
        fn = _functions.get(name)
        names = list(_functions)
    if fn is None:
        hint, known = _hint(name, names)
        raise KeyError(f"no guard function named '{name}'{hint} (known: {known})")
    return fn


def guard_function_names() -> frozenset[str]:
    with _lock:
        return frozenset(_functions)


def guard_functions() -> dict[str, Callable[..., object]]:
    """A snapshot copy of the registry: name -> function (pass it to evaluate/update)."""
    with _lock:
        return dict(_functions)


def register_reward(
    name: str | None = None,
    *,
    keys: "list[str] | tuple[str, ...]" = (),
    outcomes: "list[str] | tuple[str, ...]" = (),
    max_reward: Callable[..., float | None] | None = None,
    presets: "dict[str, dict[str, float]] | None" = None,
    evaluate: Callable[..., object] | None = None,
) -> Callable[[F], F]:
    """Decorator registering a reward ``fn(prompts, completions, values, **columns)`` (see
    :mod:`curriculum.rewarding`) under ``name`` (default: the function's ``__name__``), with
    the value ``keys`` its presets hold, the ``outcomes`` it reports (per-step metrics guards
    can read), optionally ``max_reward(values, **item_columns)`` and built-in ``presets``.
    A spec then says ``[reward] name = "NAME"``.  Re-registering a name warns and replaces."""
    if callable(name) and not isinstance(name, str):
        raise TypeError("use @register_reward(keys=[...]) (with parentheses) or @register_reward('name', keys=[...])")

    def deco(fn: F) -> F:
        from curriculum.rewarding import RewardDef, outcome_name_problem

        key = _decorated_name("register_reward", name, fn)
        if not isinstance(key, str) or not _NAME_RE.match(key):
            raise ValueError(f"reward name must be an identifier (letters, digits, _), got {key!r}")
        ks = tuple(keys)
        for k in ks:
            if not isinstance(k, str) or not _NAME_RE.match(k):
                raise ValueError(f"reward '{key}': value keys are identifiers, got {k!r}")
        for o in outcomes:
            why = outcome_name_problem(o)
            if why:
                raise ValueError(f"reward '{key}': {why}")
        for pname, vals in (presets or {}).items():
            bad = sorted(set(vals) ^ set(ks))
            if bad:
                raise ValueError(f"reward '{key}': preset '{pname}' must hold exactly the keys {', '.join(ks)} (differs in {', '.join(bad)})")
        d = RewardDef(
            name=key,
            fn=fn,
            keys=ks,
            outcomes=tuple(outcomes),
            max_reward=max_reward,
            presets={p: dict(v) for p, v in (presets or {}).items()},
            evaluate=evaluate,
            source=_where(fn),
        )
        with _lock:
            old = _rewards.get(key)
            if old is not None and old.fn is not fn and not _same_function(old.fn, fn):  # type: ignore[attr-defined]
                warnings.warn(
                    f"reward '{key}' was already registered ({_where(old.fn)}); replacing it with {_where(fn)}",  # type: ignore[attr-defined]
                    UserWarning,
                    stacklevel=2,
                )
            _rewards[key] = d
        try:  # the declaration travels with the function: found again even after a registry
            fn.__curriculum_reward__ = d  # type: ignore[attr-defined]  # scope ended (module cached)
        except (AttributeError, TypeError):
            pass
        return fn

    return deco


def _load_builtin_rewards() -> None:
    for mod in BUILTIN_REWARD_PROVIDERS:
        m = importlib.import_module(mod)
        reg = getattr(m, "register", None)
        if callable(reg):
            reg()


def get_reward(name: str):
    """The :class:`curriculum.rewarding.RewardDef` registered under ``name``; KeyError with a
    suggestion if none (built-in rewards are registered on first use)."""
    with _lock:
        d = _rewards.get(name)
    if d is None:
        _load_builtin_rewards()
        with _lock:
            d = _rewards.get(name)
            names = list(_rewards)
        if d is None:
            hint, known = _hint(name, names)
            raise KeyError(
                f"no reward named '{name}'{hint} (registered: {known}; a module that registers one goes in "
                "run.guard_modules, or name the function itself with function = \"MODULE:FUNCTION\")"
            )
    return d


def reward_for_function(fn: Callable[..., object]):
    """The RewardDef registered for this very function object, or None."""
    with _lock:
        for d in _rewards.values():
            if d.fn is fn:  # type: ignore[attr-defined]
                return d
    # registered once, then undone by a `registry.scoped()` that ended while the module stayed
    # imported: its decorator's declaration is still on the function
    d = getattr(fn, "__curriculum_reward__", None)
    return d if d is not None and getattr(d, "fn", None) is fn else None


def reward_names() -> frozenset[str]:
    with _lock:
        return frozenset(_rewards)


def import_guard_modules(modules: list[str], base_dir: Path) -> list[str]:
    """Import each entry of ``modules`` so its ``@register_guard`` decorators run.

    An entry ending in ``.py`` (or containing a path separator) is a file path, relative to
    ``base_dir`` (the spec's folder) unless absolute; anything else is a dotted module name,
    looked up with ``base_dir`` temporarily on ``sys.path``.  Returns the imported module
    names.  Raises :class:`GuardImportError` naming the entry on any failure (missing file,
    syntax error, exception at import time).
    """
    if isinstance(modules, str):
        modules = [modules]
    base = Path(base_dir)
    imported: list[str] = []
    for entry in modules:
        if not isinstance(entry, str) or not entry.strip():
            raise GuardImportError(str(entry), "expected a module name or a .py path")
        entry = entry.strip()
        if entry.endswith(".py") or "/" in entry or "\\" in entry:
            imported.append(_import_file(entry, base))
        else:
            imported.append(_import_dotted(entry, base))
    return imported


def _import_file(entry: str, base: Path) -> str:
    path = Path(entry)
    if not path.is_absolute():
        path = base / path
    path = path.resolve()
    if not path.is_file():
        raise GuardImportError(entry, f"file not found: {path}")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    mod_name = f"_curriculum_guards_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{digest}"
    if mod_name in sys.modules:
        return mod_name
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise GuardImportError(entry, f"not an importable Python file: {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as e:  # noqa: BLE001 - report any import-time failure by name
        sys.modules.pop(mod_name, None)
        if isinstance(e, KeyboardInterrupt):
            raise
        if isinstance(e, SystemExit):  # never a silent end of `validate` with the module's status
            raise GuardImportError(entry, f"the module called sys.exit({e.code!r}) at import time") from None
        raise GuardImportError(entry, f"{type(e).__name__}: {e}") from e
    return mod_name


def _import_dotted(entry: str, base: Path) -> str:
    if not all(part.isidentifier() for part in entry.split(".")):
        raise GuardImportError(entry, "not a valid dotted module name")
    added = False
    base_s = str(base.resolve())
    if base_s not in sys.path:
        sys.path.insert(0, base_s)
        added = True
    try:
        importlib.import_module(entry)
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, KeyboardInterrupt):
            raise
        if isinstance(e, SystemExit):
            raise GuardImportError(entry, f"the module called sys.exit({e.code!r}) at import time") from None
        raise GuardImportError(entry, f"{type(e).__name__}: {e}") from e
    finally:
        if added:
            try:
                sys.path.remove(base_s)
            except ValueError:
                pass
    return entry


__all__ = [
    "scoped",
    "GuardImportError",
    "register_guard",
    "unregister_guard",
    "get_guard_function",
    "guard_function_names",
    "guard_functions",
    "import_guard_modules",
    "register_reward",
    "get_reward",
    "reward_for_function",
    "reward_names",
]
