"""The package's modules form layers that only point down, with no import cycle.

Every import in adamc/ is read from the source (module level and inside functions
alike, ``import`` and ``from ... import``), so a lazy import cannot hide a cycle.
A module may import modules of lower layers only (never one of its own layer), and
the compiled module imports nothing of the package.
"""
import ast
import re
from pathlib import Path

import pytest

from adamc import _kernels
from adamc.algorithms import ALGORITHMS, HYPERPARAMETERS

PACKAGE = Path(__file__).resolve().parent.parent / "adamc"

# Lowest first. Read as: kernels -> validation -> the algorithm table -> optimizers
# -> state snapshot/format -> {checkpoint, distributed} -> minimize -> CLI. Modules of
# a subpackage are named with dots ("algorithms.adam"; "algorithms" is its __init__).
# The private subpackages show the parts: _core (the optimizer core), _parallel (MPI),
# _fitting (the minimize drivers); their __init__ files hold a docstring only.
ALGORITHM_MODULES = sorted(f"algorithms.{p.stem}" for p in (PACKAGE / "algorithms").glob("*.py")
                           if not p.stem.startswith("_"))
LAYERS = [
    ["_core", "_parallel", "_fitting"],           # the subpackages' __init__: import nothing
    ["_kernels", "_version", "algorithms._numpy"],  # compiled core; the twins' NumPy parts
    ["_core.validation", "schedules", "_core.threads"],
    ["_core.config", "algorithms._table"],        # the table's types, the hyperparameters
    ["_core.optimizer", "algorithms._stateless"],  # the optimizer base; the stateless steps
    ALGORITHM_MODULES,                            # one module per algorithm (or family)
    ["algorithms"],                               # the one list of algorithms
    ["optim", "functional", "_reference"],        # public homes; the oracle's index
    ["_core.port"],                               # what adapters use of an optimizer
    ["_core.format", "_parallel.collective"],     # the state format; MPI agreement
    ["checkpoint", "_parallel.reducer"],
    ["distributed", "_fitting.minimize_sync"],
    ["_fitting.lowlevel"],                        # compiled objectives (LowLevelCallable)
    ["_fitting.problem", "_fitting.batches"],     # what a minimize run is given
    ["_fitting.minimize"],
    ["_fitting.methods", "_fitting.many"],        # built on the driver
    ["__init__"],                                 # the public namespace
    ["_bench"],                                   # the command line: its benchmark
    ["__main__"],
]
LAYER = {m: i for i, layer in enumerate(LAYERS) for m in layer}


def modules():
    names = set()
    for p in [*PACKAGE.rglob("*.py"), *PACKAGE.glob("*.pyx")]:
        parts = p.relative_to(PACKAGE).with_suffix("").parts
        if len(parts) > 1 and parts[-1] == "__init__":
            parts = parts[:-1]
        names.add(".".join(parts))
    return sorted(names)


def source_of(name):
    """The file of module ``name`` (None for the compiled module)."""
    base = PACKAGE.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists() and path.parent.is_relative_to(PACKAGE):
            return path
    return None


def _package_of(name):
    path = source_of(name)
    parts = name.split(".")
    return parts if path is not None and path.name == "__init__.py" and name != "__init__" \
        else parts[:-1]


def imports_of(name):
    """(imported module, line) for every import of a package module in ``name``."""
    path = source_of(name)
    if path is None:  # the compiled module (and its includes): every import statement
        text = "\n".join(p.read_text() for p in [PACKAGE / f"{name}.pyx",
                                                  *sorted(PACKAGE.glob("*.pxi"))])
        found = []
        for lineno, line in enumerate(text.splitlines(), 1):
            m = re.match(r"\s*(?:from\s+(\S+)\s+)?c?import\s+(.+)", line)
            if m and (m.group(1) or "").startswith((".", "adamc")):
                found.append((m.group(1), lineno))
            elif m and not m.group(1) and m.group(2).startswith("adamc"):
                found.append((m.group(2), lineno))
        return found
    known = set(modules())
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                package = _package_of(name)
                if node.level - 1 > len(package):
                    found.append(("<outside the package>", node.lineno))
                    continue
                parts = package[:len(package) - node.level + 1]
                parts += node.module.split(".") if node.module else []
            elif (node.module or "").split(".")[0] == "adamc":
                parts = node.module.split(".")[1:]
            else:
                continue
            module = ".".join(parts)
            for alias in node.names:
                sub = f"{module}.{alias.name}" if module else alias.name
                target = sub if sub in known else (module or "__init__")
                found.append((target, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "adamc":
                    found.append(("__init__", node.lineno))
                elif alias.name.startswith("adamc."):
                    found.append((alias.name.split(".", 1)[1], node.lineno))
    return sorted(set(found), key=lambda t: t[1])


def test_internals_page_shows_the_layers():
    """docs/internals.md's table lists LAYERS, row by row (the algorithm modules as
    ``algorithms.<name>``)."""
    text = (PACKAGE.parent / "docs" / "internals.md").read_text()
    table = text[text.index("| layer | modules |"):].split("\n\n")[0].splitlines()[2:]
    shown = [re.findall(r"`([^`]+)`", row.split("|")[2]) for row in table]
    want = [["algorithms.<name>"] if layer is ALGORITHM_MODULES else layer for layer in LAYERS]
    assert shown == want


def test_every_module_has_a_layer():
    assert set(modules()) == set(LAYER), "place new modules in LAYERS"


@pytest.mark.parametrize("name", modules())
def test_imports_point_down(name):
    for target, line in imports_of(name):
        assert target in LAYER, f"{name}.py:{line} imports {target}"
        assert LAYER[target] < LAYER[name], (
            f"{name}.py:{line} imports {target}, which is not in a lower layer "
            f"({name}: layer {LAYER[name]}, {target}: layer {LAYER[target]})")


def test_the_compiled_module_imports_nothing_of_the_package():
    assert imports_of("_kernels") == []


def test_the_checker_sees_function_level_imports(tmp_path, monkeypatch):
    """The test can fail: a lazy upward import is reported."""
    (tmp_path / "optim.py").write_text("def f():\n    from .checkpoint import save\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path)
    assert imports_of("optim") == [("checkpoint", 2)]
    with pytest.raises(AssertionError, match="not in a lower layer"):
        test_imports_point_down("optim")


def test_minimize_driver_has_no_mpi_branches():
    """The SciPy driver talks to one collaborator (_Local, or adamc.distributed's for
    options['comm']) and never to MPI itself."""
    tree = ast.parse((PACKAGE / "_fitting" / "minimize.py").read_text())
    run = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_run")
    names = {n.id for n in ast.walk(run) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(run) if isinstance(n, ast.Attribute)}
    assert not names & {"comm", "sync", "MPI", "_MinimizeSync", "_agree", "_communicator"}
    assert not [n for n in ast.walk(run) if isinstance(n, ast.ImportFrom)
                and "distributed" in (n.module or "")]


@pytest.mark.parametrize("name", [m for m in modules() if source_of(m)])
def test_no_private_imports_of_other_packages(name):
    for node in ast.walk(ast.parse(source_of(name).read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            assert parts[0] == "adamc" or not any(p.startswith("_") for p in parts[1:]), \
                f"{name}.py:{node.lineno} imports the private {node.module}"


# ----------------------------------------------------------------------------------
# Adapters use an optimizer through adamc._core.port.Port only

def optimizer_internals():
    """Private names of adamc.Optimizer: its methods and class attributes, and the
    instance attributes its module assigns."""
    import adamc

    names = {n for n in dir(adamc.Optimizer) if n.startswith("_") and not n.startswith("__")}
    for node in ast.walk(ast.parse((PACKAGE / "_core" / "optimizer.py").read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in ("self", "opt") and node.attr.startswith("_") \
                and not node.attr.startswith("__"):
            names.add(node.attr)
    return names


def internals_used(name):
    """(attribute, line) for every use of an optimizer internal on an object other
    than the module's own ``self``."""
    internals = optimizer_internals()
    found = []
    for node in ast.walk(ast.parse(source_of(name).read_text())):
        if isinstance(node, ast.Attribute) and node.attr in internals and not (
                isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            found.append((node.attr, node.lineno))
    return found


@pytest.mark.parametrize("name", [m for m in modules()
                                  if m not in ("_core.optimizer", "_core.port") and source_of(m)])
def test_adapters_use_the_port(name):
    used = internals_used(name)
    assert not used, (f"{name}.py uses internals of adamc.Optimizer {used}; go through "
                      f"adamc._core.port.Port (add what is missing there)")


def test_the_port_check_can_fail(tmp_path, monkeypatch):
    (tmp_path / "_core").mkdir()
    (tmp_path / "_core" / "optimizer.py").write_text(
        (PACKAGE / "_core" / "optimizer.py").read_text())
    (tmp_path / "distributed.py").write_text("def f(opt):\n    return opt._export()\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path)
    assert internals_used("distributed") == [("_export", 2)]


# The compiled drivers (minimize's and minimize_many's loops, the stateless steps) reach
# the engine through its driver interface only (the final drive_* methods at the end
# of _Engine in _engine.pxi), never its private members.
DRIVER_PARTS = ["_minimize_loop.pxi", "_minimize_many_loop.pxi", "_minimize_many_c_fits.pxi",
                "_minimize_many_row_steps.pxi", "_stateless.pxi"]


def engine_privates(text):
    """The private members (attributes and methods) _Engine declares."""
    body = text[text.index("cdef class _Engine"):]
    end = re.search(r"\n(?=\S)", body)
    body = body[:end.start()] if end else body
    names = set()
    for decl in re.findall(r"^    cdef ([^#\n]*)", body, re.M):
        decl = decl.split("(")[0] if "(" in decl else decl  # a method: its name
        names |= {n for n in re.findall(r"\b(_\w+)\b", decl)}
    return names


def private_engine_uses(part, privates):
    """(member, line) of every use of a private member of _Engine outside comments."""
    found = []
    for lineno, line in enumerate((PACKAGE / part).read_text().splitlines(), 1):
        code = line.split("#")[0]
        found += [(m.group(1), lineno) for m in re.finditer(r"(?<!self)\.(_\w+)\b", code)
                  if m.group(1) in privates]
    return found


@pytest.mark.parametrize("part", DRIVER_PARTS)
def test_drivers_reach_the_engine_through_its_interface(part):
    privates = engine_privates((PACKAGE / "_engine.pxi").read_text())
    assert {"_slots", "_groups", "_busy", "_run", "_advance", "_prepare_coefs",
            "_nparams", "_ngroups"} <= privates  # the reader sees them
    used = private_engine_uses(part, privates)
    assert not used, f"{part} uses private members of _Engine {used}: add a drive_* method"


def test_the_driver_check_can_fail(tmp_path, monkeypatch):
    privates = engine_privates((PACKAGE / "_engine.pxi").read_text())
    (tmp_path / "_minimize_loop.pxi").write_text(
        "cdef int f(_Engine eng):  # eng._busy in a comment is not a use\n"
        "    eng._busy = 1\n    self._busy = 0\n    return eng.drive_step(g)\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path)
    assert private_engine_uses("_minimize_loop.pxi", privates) == [("_busy", 2)]


# ----------------------------------------------------------------------------------
# One list of hyperparameter names (adamc.algorithms.HYPERPARAMETERS) for every layer

# The C struct's names of hyperparameters whose field is not their own name (or is two).
C_FIELDS = {"betas": ("beta1", "beta2"), "etas": ("etaminus", "etaplus"),
            "step_sizes": ("step_size_min", "step_size_max"),
            "decoupled_weight_decay": ("decoupled",), "decouple": ("decoupled",),
            "use_bias_correction": ("bias_correction",)}
SPLIT = {k: v for k, v in C_FIELDS.items() if len(v) == 2}  # the stateless steps' halves


def _struct_fields(text):
    body = re.sub(r"/\*.*?\*/|#[^\n]*", "", text)
    return [f.strip() for line in body.splitlines() for f in
            re.sub(r"^(double|int)\s+", "", line.strip()).rstrip(";").split(",") if f.strip()]


def test_the_c_and_cython_field_lists_follow_the_hyperparameters():
    """HYPERPARAMETERS is the one list of names: the C struct adamc_hyper, its Cython
    declaration, the copy into it (_fill_hyper) and the stateless steps' field list
    (_STEP_FIELDS) hold its names and no others."""
    header = (PACKAGE.parent / "src_c" / "adamc.h").read_text()
    c = _struct_fields(re.search(r"typedef struct adamc_hyper \{(.*?)\} adamc_hyper;",
                                 header, re.S).group(1))
    pyx = (PACKAGE / "_kernels.pyx").read_text()
    cy = _struct_fields(re.search(r"ctypedef struct adamc_hyper:\n((?:        .*\n)+)",
                                  pyx).group(1))
    assert cy == c, "the Cython declaration of adamc_hyper differs from src_c/adamc.h"
    expanded = {f for name in HYPERPARAMETERS for f in C_FIELDS.get(name, (name,))}
    assert set(c) == expanded, (set(c) ^ expanded)
    fill = re.search(r"cdef int _fill_hyper\(.*?\n\n\n", (PACKAGE / "_stateless.pxi")
                     .read_text(), re.S).group(0)
    copied = set(re.findall(r'v\.get\("(\w+)"', fill)) | set(re.findall(r'"(\w+)" in v', fill))
    assert copied == set(HYPERPARAMETERS), set(copied) ^ set(HYPERPARAMETERS)
    stateless = {k for a in ALGORITHMS.values() if a.stateless for k, _ in a.hyper}
    want = {f for k in stateless for f in SPLIT.get(k, (k,))}
    assert set(_kernels._STEP_FIELDS) == want, set(_kernels._STEP_FIELDS) ^ want
