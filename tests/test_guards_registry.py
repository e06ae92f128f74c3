"""curriculum.registry: registering and importing custom guard functions."""

import sys
import textwrap
import warnings

import pytest

from curriculum import registry
from curriculum.registry import (
    GuardImportError,
    get_guard_function,
    guard_function_names,
    import_guard_modules,
    register_guard,
)


@pytest.fixture(autouse=True)
def _clean_registry():
    before = registry.guard_functions()
    yield
    for name in registry.guard_function_names() - set(before):
        registry.unregister_guard(name)
    for name, fn in before.items():
        registry._functions[name] = fn


def test_register_with_default_and_explicit_names():
    @register_guard()
    def my_check(view):
        return True

    @register_guard("other_name")
    def whatever(view, x):
        return x

    assert get_guard_function("my_check") is my_check
    assert get_guard_function("other_name") is whatever
    assert {"my_check", "other_name"} <= guard_function_names()


def test_reregistering_a_different_callable_warns_and_replaces():
    @register_guard("dup")
    def first(view):
        return 1

    with pytest.warns(UserWarning, match="already registered"):
        @register_guard("dup")
        def second(view):
            return 2

    assert get_guard_function("dup") is second


def test_reregistering_the_same_callable_is_silent():
    def f(view):
        return 1

    register_guard("same")(f)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_guard("same")(f)


def test_unknown_name_suggests():
    @register_guard()
    def reward_stalled(view):
        return True

    with pytest.raises(KeyError, match="did you mean 'reward_stalled'"):
        get_guard_function("reward_staled")


@pytest.mark.parametrize("name", ["mean", "prev", "phase", "abs", "and", "bad name", "1x", ""])
def test_reserved_or_invalid_names_are_rejected(name):
    with pytest.raises(ValueError):
        register_guard(name)(lambda view: True)


def test_bare_decorator_misuse_is_a_clear_error():
    with pytest.raises(TypeError, match="parentheses"):
        @register_guard  # type: ignore[arg-type]
        def f(view):
            return True


def test_import_py_file_relative_to_spec_dir(tmp_path):
    (tmp_path / "guards").mkdir()
    (tmp_path / "guards" / "mine.py").write_text(textwrap.dedent("""
        from curriculum.registry import register_guard

        @register_guard()
        def file_guard_fn(view, metric):
            return len(view.window(metric, 1)) > 0
    """))
    names = import_guard_modules(["guards/mine.py"], tmp_path)
    assert len(names) == 1
    assert "file_guard_fn" in guard_function_names()
    # importing again does not re-run / warn
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import_guard_modules(["guards/mine.py"], tmp_path)


def test_import_dotted_module_from_spec_dir(tmp_path):
    pkg = tmp_path / "myguards_pkg_for_test"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "checks.py").write_text(textwrap.dedent("""
        from curriculum.registry import register_guard

        @register_guard("dotted_guard_fn")
        def f(view):
            return False
    """))
    try:
        import_guard_modules(["myguards_pkg_for_test.checks"], tmp_path)
        assert "dotted_guard_fn" in guard_function_names()
        assert str(tmp_path) not in sys.path  # path added only for the import
    finally:
        for m in [m for m in sys.modules if m.startswith("myguards_pkg_for_test")]:
            del sys.modules[m]


@pytest.mark.parametrize(
    "entry, content, fragment",
    [
        ("missing.py", None, "file not found"),
        ("no_such_module_xyz", None, "ModuleNotFoundError"),
        ("broken.py", "def f(:\n", "SyntaxError"),
        ("raises.py", "raise RuntimeError('at import')\n", "RuntimeError: at import"),
        ("bad-name", None, "not a valid dotted module name"),
    ],
)
def test_import_failures_name_the_module(tmp_path, entry, content, fragment):
    if content is not None:
        (tmp_path / entry).write_text(content)
    with pytest.raises(GuardImportError) as info:
        import_guard_modules([entry], tmp_path)
    assert info.value.module == entry
    assert entry in str(info.value) and fragment in str(info.value)
