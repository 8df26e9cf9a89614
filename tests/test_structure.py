"""The shape of src/archbench, read from its import graph (tests/structure.py):
no import cycles, at most 8 layers from the command line down to the leaves,
the run layer in one package, no function over 100 lines."""

from tests.structure import SRC, cycles, depth, imports, long_functions, modules


def test_no_import_cycles():
    assert cycles(imports(modules())) == []


def test_at_most_8_layers_from_the_command_line_to_the_leaves():
    graph = imports(modules())
    n, chain = depth(graph, "archbench.cli")
    assert n <= 8, " -> ".join(chain)


def test_the_run_layer_is_one_package():
    top = {p.stem for p in (SRC / "archbench").glob("*.py")}
    assert not top & {"study", "executors", "jobs", "threads", "unit", "tracking", "signals", "pool", "rundir"}
    assert {"study", "executors", "pool", "rundir", "unit", "threads", "jobs", "tracking", "signals",
            "preflight"} <= {p.stem for p in (SRC / "archbench" / "run").glob("*.py")}


def test_config_is_a_leaf_schema():
    assert imports(modules())["archbench.config"] <= {"archbench.errors"}


def test_no_function_over_100_lines():
    assert long_functions(modules()) == []


def test_graph_reader_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "archbench"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from archbench.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from . import c\nfrom ..a import f\n")
    (pkg / "sub" / "c.py").write_text("x = 1\n")
    graph = imports(modules(tmp_path))
    assert graph["archbench.a"] == {"archbench.sub.b"}
    assert graph["archbench.sub.b"] == {"archbench.sub.c", "archbench.a"}
    assert cycles(graph) == [["archbench.a", "archbench.sub.b"]]
