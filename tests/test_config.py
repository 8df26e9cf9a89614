"""One home for configuration: precedence, sources, validation at resolve,
--resume, experiment files, the API equal to the CLI, no import loops."""

import ast
import json
from pathlib import Path

import pytest
import torch

from archbench.cli import build_parser, explicit_options, main
from archbench.config import TRAIN_DEFAULTS, Formulation, Precision, StudyConfig, TrainConfig
from archbench.errors import ModelError, UsageError
from archbench.models.registry import recipe_of
from archbench.resolve import config_differences, load_experiment, resolve, resume_config

ROOT = Path(__file__).resolve().parents[1]


def cli_config(*argv, experiment=None):
    """What `archbench run ARGV` resolves to (nothing runs)."""
    args = build_parser().parse_args(["run", *argv])
    return resolve(explicit_options(args), experiment=load_experiment(experiment) if experiment else None)


# Every source x representative keys; "given" values equal to defaults count as given.
@pytest.mark.parametrize("argv, model, key, value, source", [
    ((), "mlp", "epochs", 5, "default"),
    ((), "cnn_bn", "epochs", recipe_of("cnn_bn")["epochs"], "recipe"),
    ((), "cnn_bn", "lr", recipe_of("cnn_bn")["lr"], "recipe"),
    (("--epochs", "5"), "cnn_bn", "epochs", 5, "cli"),               # equal to the default, still wins
    (("--lr", "0.001"), "cnn_bn", "lr", 1e-3, "cli"),                 # overrides the zoo recipe's lr
    (("--precision", "fp32"), "dct_cnn", "precision", Precision.FP32, "cli"),
    (("--no-augment-flip",), "dct_cnn", "augment_flip", False, "cli"),
    (("--formulation", "plain"), "mlp", "formulation", Formulation.PLAIN, "cli"),
    (("--no-cuda-graphs",), "mlp", "cuda_graphs", False, "cli"),
])
def test_precedence_on_the_command_line(argv, model, key, value, source):
    cfg = cli_config("--models", f"mlp,{model}" if model != "mlp" else "mlp", *argv)
    assert getattr(cfg.train_config_for(model), key) == value
    assert cfg.sources["train"][model][key] == source


def test_precedence_over_an_experiment_file(tmp_path):
    exp = tmp_path / "exp.toml"
    exp.write_text('seeds = [1]\n[train]\nepochs = 3\nlr = 0.002\n'
                   '[[models]]\nname = "mlp"\n'
                   '[[models]]\nname = "dct_cnn"\ntrain = { epochs = 4, precision = "fp32" }\n')
    cfg = cli_config(experiment=exp)
    mlp, dct = cfg.train_config_for("mlp"), cfg.train_config_for("dct_cnn")
    src = cfg.sources["train"]
    assert cfg.seeds == (1,) and cfg.sources["seeds"] == "file"
    assert (mlp.epochs, src["mlp"]["epochs"]) == (3, "file")                        # [train] > default
    assert (dct.epochs, src["dct_cnn"]["epochs"]) == (4, "file:model")              # model table > [train]
    assert (dct.lr, src["dct_cnn"]["lr"]) == (0.002, "file")                        # [train] > recipe
    assert (dct.precision, src["dct_cnn"]["precision"]) == ("fp32", "file:model")   # model table > recipe
    assert (dct.tta_shift, src["dct_cnn"]["tta_shift"]) == (1, "recipe")            # recipe > default
    assert (mlp.batch_size, src["mlp"]["batch_size"]) == (64, "default")
    # The command line wins over all of it, whatever the value.
    cfg = cli_config(str(exp), "--epochs", "5", "--seeds", "0", experiment=exp)
    assert cfg.seeds == (0,) and cfg.sources["seeds"] == "cli"
    for m in ("mlp", "dct_cnn"):
        assert cfg.train_config_for(m).epochs == 5 and cfg.sources["train"][m]["epochs"] == "cli"
    assert cfg.train_config_for("dct_cnn").precision == "fp32"  # untouched keys keep their source
    cfg = cli_config(str(exp), "--repeats", "3", "--lr", "0.006", experiment=exp)
    assert cfg.seeds == (0, 1, 2) and cfg.train_config_for("mlp").lr == 0.006


def test_zoo_example_with_seeds_on_the_command_line_trains_one_seed():
    exp = ROOT / "examples" / "zoo.toml"
    cfg = cli_config(str(exp), "--seeds", "0", experiment=exp)
    assert cfg.seeds == (0,)
    assert cfg.train_config_for("small_cnn").lr == 0.003  # the file's model table
    assert "small_cnn" in cfg.models  # a spec is known by its own name


def test_sources_and_values_are_in_the_record_and_the_report():
    from archbench.report.document import render_markdown
    from archbench.report.sections import recipe_blocks

    cfg = cli_config("--models", "mlp,cnn_bn", "--epochs", "2")
    d = cfg.to_dict()
    assert d["train"]["cnn_bn"]["epochs"] == 2 and d["sources"]["train"]["cnn_bn"]["epochs"] == "cli"
    assert d["train"]["cnn_bn"]["optimizer"] == "adamw" and d["sources"]["train"]["cnn_bn"]["optimizer"] == "recipe"
    json.dumps(d, allow_nan=False)  # plain JSON, enumerations as strings
    text = render_markdown(recipe_blocks(d))
    assert "Training recipes differ between models" in text
    assert "| epochs | 2 (cli) | 2 (cli) |" in text and "| optimizer | adam | adamw (recipe) |" in text
    # A stored configuration reads back to the same one.
    assert StudyConfig.from_dict(d).to_dict() == d


@pytest.mark.parametrize("explicit, words", [
    ({"epochs": 0}, "epochs = 0 is invalid: expected an integer >= 1"),
    ({"epochs": True}, "epochs = True is invalid"),
    ({"precision": "fp16"}, "precision = 'fp16' is invalid: expected one of fp32, bf16"),
    ({"optimizer": "sgd"}, "expected one of adam, adamw"),
    ({"schedule": "step"}, "expected one of constant, onecycle, cosine"),
    ({"device": "tpu"}, "auto, cpu, cuda or cuda:N"),
    ({"lr": float("nan")}, "lr = nan is invalid"),
    ({"seeds": [0, 0]}, "distinct integers"),
    ({"seeds": []}, "seeds = [] is invalid"),
    ({"models": "mlp"}, "models = 'mlp' is invalid"),
    ({"models": ["mlp", "mlp"]}, "name 'mlp' twice"),
    ({"models": ["nope"]}, "unknown model 'nope'"),
    ({"name": "../x"}, "name = '../x' is invalid"),
    ({"train_limit": 0}, "train_limit = 0 is invalid"),
    ({"verify": "no"}, "verify = 'no' is invalid"),
    ({"epoch": 3}, "unknown option(s) ['epoch']"),
])
def test_resolve_checks_every_value_once_naming_the_allowed_ones(explicit, words):
    with pytest.raises(UsageError) as err:
        resolve(explicit)
    assert words in str(err.value)


def test_a_train_config_that_exists_is_valid():
    with pytest.raises(UsageError, match="formulation = 'magic' is invalid: expected one of fast, plain"):
        TrainConfig(formulation="magic")
    c = TrainConfig(lr=1, precision="bf16")  # an int lr is a number; strings become enumerations
    assert isinstance(c.lr, float) and c.precision is Precision.BF16 and c.to_dict()["precision"] == "bf16"
    with pytest.raises(Exception):
        c.lr = 0.1  # frozen: nothing downstream changes a resolved value


def test_device_is_study_wide(tmp_path):
    exp = tmp_path / "e.toml"
    exp.write_text('[[models]]\nname = "mlp"\ntrain = { device = "cpu" }\n')
    with pytest.raises(UsageError, match="device is set for the whole study"):
        resolve(experiment=load_experiment(exp))


def test_experiment_models_as_a_list_and_spec_names(tmp_path):
    (tmp_path / "lenet.toml").write_text(
        '[model]\nname = "lenet_ish"\nlayers = [{ type = "flatten" }, { type = "dense", units = 10 }]\n')
    exp = tmp_path / "e.toml"
    exp.write_text('models = ["mlp", "cnn", "lenet.toml"]\n')
    cfg = resolve(experiment=load_experiment(exp))
    assert cfg.models == ("mlp", "cnn", "lenet_ish") and "lenet_ish" in cfg.specs
    # On the command line too, a spec file is known by its own name.
    assert cli_config("--models", f"mlp,{tmp_path / 'lenet.toml'}").models == ("mlp", "lenet_ish")
    (tmp_path / "bad.toml").write_text('[model]\nname = "mlp"\nlayers = [{ type = "flatten" }]\n')
    with pytest.raises(UsageError, match="named 'mlp', which is a registered model"):
        cli_config("--models", str(tmp_path / "bad.toml"))


def test_resume_refuses_an_explicit_option_that_differs():
    stored = cli_config("--models", "mlp,cnn_bn", "--epochs", "2", "--seeds", "0,1").to_dict()
    cfg = resume_config(stored, {"epochs": 2, "seeds": [0, 1]}, where="runs/x")  # the same values: fine
    assert config_differences(cfg.to_dict(), stored) == []
    with pytest.raises(UsageError, match=r"cannot resume runs/x: epochs \(model mlp\): stored 2, given 5"):
        resume_config(stored, {"epochs": 5}, where="runs/x")
    with pytest.raises(UsageError, match="lr \\(model cnn_bn\\): stored 0.006, given 0.001"):
        resume_config(stored, {"lr": 1e-3}, where="runs/x")  # mlp has 1e-3 already; cnn_bn's recipe differs
    with pytest.raises(UsageError, match="seeds: stored \\[0, 1\\], given \\[0\\]"):
        resume_config(stored, {"seeds": [0]})
    with pytest.raises(UsageError, match="--name does not apply with --resume"):
        resume_config(stored, {"name": "other"})


def test_resume_through_the_cli_refuses_before_running(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    cfg = cli_config("--models", "mlp", "--epochs", "2")
    (run / "results.json").write_text(json.dumps({"schema": "archbench.run/2", "name": "r",
                                                  "config": cfg.to_dict(), "environment": {},
                                                  "dataset": {"name": "fashion-mnist", "test_labels": []},
                                                  "models": {}}))
    assert main(["run", "--resume", str(run), "--epochs", "5"]) == 2
    assert "epochs (model mlp): stored 2, given 5" in capsys.readouterr().err


def test_a_v1_record_upgrades_to_per_model_recipes():
    from archbench.records import upgrade_record

    v1 = {"schema": "archbench.run/1", "name": "old", "models": {}, "config": {
        "models": ["mlp", "cnn_bn"], "seeds": [0], "dataset": "fashion-mnist",
        "train": {**TRAIN_DEFAULTS, "epochs": 3}, "model_train": {"cnn_bn": {"lr": 0.006}}}}
    rec = upgrade_record(v1)
    assert rec["config"]["train"]["mlp"]["epochs"] == 3 and rec["config"]["train"]["cnn_bn"]["lr"] == 0.006
    assert rec["config"]["sources"]["train"]["mlp"]["epochs"] == "stored"
    cfg = StudyConfig.from_dict(rec["config"])
    assert cfg.train_config_for("cnn_bn").lr == 0.006 and cfg.train_config_for("mlp").lr == 1e-3


def test_reading_a_stored_configuration_registers_nothing(tmp_path):
    from archbench.models.registry import is_reference
    from archbench.resolve import register_specs

    spec = {"layers": [{"type": "flatten"}, {"type": "dense", "units": 10}]}
    stored = {**cli_config("--models", "mlp").to_dict(), "models": ["mlp", "stored_only_spec"], "specs": {
        "stored_only_spec": spec}}
    stored["train"] = {**stored["train"], "stored_only_spec": stored["train"]["mlp"]}
    cfg = StudyConfig.from_dict(stored)  # validation only: no side effect on the model registry
    assert cfg.specs == {"stored_only_spec": spec} and not is_reference("stored_only_spec")
    register_specs(cfg)  # where models are built (run_study, the pool's and Ray's workers)
    assert is_reference("stored_only_spec")


def test_a_resumed_configuration_checks_that_its_dataset_still_exists(tmp_path):
    npz = tmp_path / "gone.npz"
    npz.write_bytes(b"")
    stored = cli_config("--models", "mlp", "--dataset", str(npz)).to_dict()
    assert stored["dataset"] == str(npz.resolve())
    assert StudyConfig.from_dict(stored).dataset == str(npz.resolve())
    npz.unlink()
    assert StudyConfig.from_dict(stored).dataset == str(npz.resolve())  # the schema checks the shape only
    with pytest.raises(UsageError, match=r"stored configuration: unknown dataset '.*gone\.npz'"):
        resume_config(stored)


# ---------------------------------------------------------------- import structure

def _imports(path: Path, package: str) -> set[str]:
    """archbench modules imported anywhere in ``path`` (module level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("archbench"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("archbench")}
    return out


def test_no_import_loops_in_the_package():
    src = ROOT / "src"
    modules = {}
    for p in (src / "archbench").rglob("*.py"):
        name = ".".join(p.relative_to(src).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = p
    graph = {m: {i for i in _imports(p, "archbench") if i in modules and i != m} for m, p in modules.items()}
    # A package's __init__ that only re-exports its own submodules is not a loop through them.
    for m in graph:
        graph[m] = {i for i in graph[m] if not (m.startswith(i + ".") and i != "archbench")}
    seen, stack, loops = set(), [], []

    def visit(m):
        if m in stack:
            loops.append(stack[stack.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for n in sorted(graph[m]):
            visit(n)
        stack.pop()

    for m in sorted(graph):
        visit(m)
    assert loops == [], loops


def test_config_is_a_leaf_schema():
    # the dataclasses and their checks: no registry, no resolution (those are archbench.resolve's)
    assert _imports(ROOT / "src" / "archbench" / "config.py", "archbench") == {"archbench.errors"}


def test_building_blocks_register_nothing():
    blocks = ROOT / "src" / "archbench" / "models" / "blocks.py"
    # the error types only: nothing that registers a model (the registry, seed, zoo) is imported
    assert {i for i in _imports(blocks, "archbench")} <= {"archbench.errors"}


# ---------------------------------------------------------------- the CLI end to end, and the API equal to it
# (synthetic_fashion, from conftest.py: synthetic IDX files under Fashion-MNIST's names, run with --no-verify,
# so the CLI path is tested where Debian's package is absent)

def test_cli_runs_end_to_end_on_synthetic_data(synthetic_fashion, tmp_path, capsys):
    rc = main(["run", "--data-dir", str(synthetic_fashion), "--no-verify", "--models", "mlp,cnn", "--seeds", "0,1",
               "--epochs", "2", "--out", str(tmp_path / "runs"), "--name", "syn", "--quiet", "--no-timing"])
    assert rc == 0, capsys.readouterr().err
    rec = json.loads((tmp_path / "runs" / "syn" / "results.json").read_text())
    assert rec["dataset"]["train_samples"] == 96 and rec["dataset"]["test_samples"] == 40
    assert rec["config"]["data_dir"] == str(synthetic_fashion.resolve())
    for m in ("mlp", "cnn"):
        assert [u["status"] for u in rec["models"][m]["units"]] == ["ok", "ok"]
        assert [len(u["history"]) for u in rec["models"][m]["units"]] == [2, 2]
    report = (tmp_path / "runs" / "syn" / "report.md").read_text()
    assert "| epochs | 2 (cli) | 2 (cli) |" in report
    assert report.count("Time to result: measuring the costs took") == 2  # one per model
    u = rec["models"]["cnn"]["units"][0]
    assert u["test"]["views"] == 1 and 0 < u["timings"]["eval_seconds"] < u["timings"]["wall_seconds"]
    assert rec["models"]["cnn"]["measure_seconds"] > 0


def test_api_equals_cli(synthetic_fashion, tmp_path, capsys):
    import archbench

    common = dict(data_dir=str(synthetic_fashion), verify=False, epochs=1, out=str(tmp_path / "runs"))
    r = archbench.compare(["dct_cnn", "mlp"], seeds=[0], name="api", quiet=True, timing=False, **common)
    rc = main(["run", "--models", "dct_cnn,mlp", "--seeds", "0", "--data-dir", str(synthetic_fashion),
               "--no-verify", "--epochs", "1", "--out", str(tmp_path / "runs"), "--name", "cli", "--quiet",
               "--no-timing"])
    assert rc == 0, capsys.readouterr().err
    cli = archbench.load_run(tmp_path / "runs" / "cli")
    a, c = r.record["config"], cli.record["config"]
    assert config_differences(a, c) == []  # the same resolved values, recipes applied the same way
    assert a["train"]["dct_cnn"]["precision"] == "bf16" and a["sources"]["train"]["dct_cnn"]["precision"] == "recipe"
    swap = {"api": "cli"}
    assert json.loads(json.dumps(a["sources"]), object_hook=lambda d: {k: swap.get(v, v) if isinstance(v, str)
                                                                      else v for k, v in d.items()}) \
        == c["sources"]
    for m in ("dct_cnn", "mlp"):
        ua, uc = r.record["models"][m]["units"][0], cli.record["models"][m]["units"][0]
        assert ua["test"] == uc["test"] and [h["train_loss"] for h in ua["history"]] == \
            [h["train_loss"] for h in uc["history"]]
    assert [row["model"] for row in cli.costs()] == ["dct_cnn", "mlp"]
    assert len(cli.verdicts()) == 1 and cli.verdicts()[0].a in ("dct_cnn", "mlp")


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(28 * 28, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_api_takes_callables_and_instances_and_leaves_no_global_state(synthetic_fashion, tmp_path):
    import sys

    import matplotlib

    import archbench
    from archbench.models import list_models
    from archbench.models.registry import is_reference

    threads, path, backend = torch.get_num_threads(), list(sys.path), matplotlib.get_backend()
    r = archbench.compare({"net_fn": TinyNet, "net_obj": TinyNet()}, seeds=[0, 1], data_dir=str(synthetic_fashion),
                          verify=False, epochs=1, out=str(tmp_path / "runs"), quiet=True, timing=False)
    assert set(r.record["models"]) == {"net_fn", "net_obj"}
    units = r.record["models"]["net_obj"]["units"]
    assert all(u["status"] == "ok" for u in units)
    assert units[0]["test"]["predictions"] != units[1]["test"]["predictions"] or \
        units[0]["history"][0]["train_loss"] != units[1]["history"][0]["train_loss"]  # re-initialised per seed
    # The instance re-initialised from seed s is the callable built from seed s.
    fn_units = r.record["models"]["net_fn"]["units"]
    assert [u["history"][0]["train_loss"] for u in units] == [u["history"][0]["train_loss"] for u in fn_units]
    assert torch.get_num_threads() == threads and sys.path == path and matplotlib.get_backend() == backend
    assert not is_reference("net_fn") and "net_fn" not in list_models()  # known only during the call


def test_api_refuses_instances_it_cannot_reseed(tmp_path):
    import archbench

    class Raw(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(784, 10))

        def forward(self, x):
            return x.flatten(1) @ self.w

    with pytest.raises(ModelError, match="no reset_parameters\\(\\) re-initialises w.*callable"):
        archbench.compare([Raw()], out=str(tmp_path))
    frozen = TinyNet()
    frozen.fc.weight.requires_grad_(False)
    with pytest.raises(ModelError, match="frozen parameters \\(fc.weight\\)"):
        archbench.compare([frozen], out=str(tmp_path))
    with pytest.raises(UsageError, match="model name 'mlp' is taken"):
        archbench.compare({"mlp": TinyNet}, out=str(tmp_path))
    with pytest.raises(UsageError, match="unknown option\\(s\\) \\['epoch'\\]"):
        archbench.compare(["mlp"], epoch=3, out=str(tmp_path))
    assert not (tmp_path / "runs").exists()
