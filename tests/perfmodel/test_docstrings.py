"""Every public function and method of the API has numpydoc ``Parameters`` and ``Returns`` sections.

The API is the names in ``perfmodel.__all__`` and ``perfmodel.serving.__all__`` and the public methods of the
classes among them (their own and those inherited from the package's classes). A function with parameters
beyond ``self``/``cls`` needs a ``Parameters`` section; one that returns a value (annotated other than ``None``,
or, unannotated, with a ``return <value>`` in its body) needs a ``Returns`` section.
"""

import ast
import inspect
import re
import textwrap

import perfmodel
import perfmodel.serving

import pytest


def _has_section(doc: str | None, title: str) -> bool:
    return re.search(rf"^\s*{title}\s*\n\s*-{{3,}}\s*$", doc or "", re.M) is not None


def _returns_value(fn) -> bool:
    ann = inspect.signature(fn).return_annotation
    if ann is not inspect.Signature.empty:
        return ann not in (None, "None")
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    stack = list(tree.body[0].body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            return True
        if (
            isinstance(node, ast.Return)
            and node.value is not None
            and not (isinstance(node.value, ast.Constant) and node.value.value is None)
        ):
            return True
        stack.extend(ast.iter_child_nodes(node))
    return False


def _ours(obj) -> bool:
    return (getattr(obj, "__module__", None) or "").startswith("perfmodel")


def _api() -> dict[str, object]:
    """Qualified name -> plain function of every public function and method of the API."""
    found: dict[str, object] = {}
    for mod in (perfmodel, perfmodel.serving):
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.isfunction(obj) and _ours(obj):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
            elif inspect.isclass(obj) and _ours(obj) and not issubclass(obj, BaseException):
                for klass in obj.__mro__:
                    if not _ours(klass):
                        continue
                    for attr, raw in vars(klass).items():
                        if attr.startswith("_"):
                            continue
                        fn = raw.__func__ if isinstance(raw, (classmethod, staticmethod)) else raw
                        if inspect.isfunction(fn) and _ours(fn):
                            found[f"{fn.__module__}.{fn.__qualname__}"] = fn
    return found


API = _api()


def test_the_scan_finds_the_api():
    # the scan reaches module functions, methods and class methods: an empty scan would pass everything below
    assert "perfmodel.analyze.analyze" in API
    assert "perfmodel.serving.metrics.SimResult.summary" in API
    assert "perfmodel.scenario.Scenario.make" in API
    assert len(API) > 40


def _parameters(fn) -> list[str]:
    params = list(inspect.signature(fn).parameters)
    return params[1:] if params and params[0] in ("self", "cls") else params


@pytest.mark.parametrize("qualname", sorted(API))
def test_public_function_has_numpydoc_sections(qualname):
    fn = API[qualname]
    doc = inspect.getdoc(fn)
    missing = []
    if _parameters(fn) and not _has_section(doc, "Parameters"):
        missing.append("Parameters")
    if _returns_value(fn) and not (_has_section(doc, "Returns") or _has_section(doc, "Yields")):
        missing.append("Returns")
    assert not missing, f"{qualname} lacks a numpydoc section: {', '.join(missing)}"
