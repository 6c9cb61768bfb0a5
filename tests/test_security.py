"""Security defaults, checked statically over the package and through the code's own defaults:
services and the Ray dashboard bind to loopback unless told otherwise, weights load through
safetensors (any `torch.load` is `weights_only=True`), nothing unpickles or shells out on user input,
and names that reach the registry, folders or URLs are validated."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest


from tunefleet import cli

# Ray's own Serve schema still uses pydantic v1-style Field extras; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")
PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "tunefleet"
SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def calls(name: str) -> list[tuple[Path, ast.Call]]:
    """Every call of `name`: a bare name ("eval") matches only itself, a dotted one ("torch.load")
    also any longer path ending in it ("self.torch.load"); a plain method name ("from_pretrained")
    matches any receiver."""
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                callee = ast.unparse(node.func)
                bare = name in ("eval", "exec")
                if callee == name or (not bare and callee.endswith("." + name)):
                    found.append((path, node))
    return found


def where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"


def keyword(node: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in node.keywords if k.arg == name), None)


def test_the_package_has_sources_to_check():
    assert len(SOURCES) > 10 and any(p.as_posix().endswith("train/loop.py") for p in SOURCES)


def test_every_torch_load_is_weights_only():
    for path, node in calls("torch.load"):
        value = keyword(node, "weights_only")
        assert isinstance(value, ast.Constant) and value.value is True, f"{where(path, node)}: torch.load without weights_only=True"


@pytest.mark.parametrize("name", ["pickle.load", "pickle.loads", "cloudpickle.load", "cloudpickle.loads",
                                  "joblib.load", "dill.load", "marshal.loads", "yaml.load", "yaml.unsafe_load",
                                  "os.system", "os.popen", "eval", "exec"])
def test_nothing_unpickles_evaluates_or_shells_out(name):
    assert [where(p, n) for p, n in calls(name)] == []


def test_no_shell_and_only_fixed_argument_lists_for_subprocesses():
    for kind in ("run", "Popen", "call", "check_call", "check_output"):
        for path, node in calls(f"subprocess.{kind}"):
            shell = keyword(node, "shell")
            assert shell is None or (isinstance(shell, ast.Constant) and shell.value is False), where(path, node)
            # A literal list of literal strings: nothing a user wrote reaches a command line.
            argv = node.args[0] if node.args else keyword(node, "args")
            assert isinstance(argv, ast.List) and all(isinstance(e, ast.Constant) for e in argv.elts), \
                f"{where(path, node)}: subprocess argv is built from variables"


def test_numpy_loads_refuse_pickles():
    for path, node in calls("np.load"):
        value = keyword(node, "allow_pickle")
        assert isinstance(value, ast.Constant) and value.value is False, f"{where(path, node)}: np.load may unpickle"


def test_weights_load_through_safetensors_and_no_remote_code():
    for path, node in calls("from_pretrained"):
        callee = ast.unparse(node.func)
        if "Tokenizer" in callee or "Config" in callee:
            continue  # tokenizer and config files are JSON/text
        value = keyword(node, "use_safetensors")
        assert isinstance(value, ast.Constant) and value.value is True, f"{where(path, node)}: {callee} may load a pickle"
    for path, node in calls("from_pretrained") + calls("load_dataset"):
        value = keyword(node, "trust_remote_code")
        assert value is None or (isinstance(value, ast.Constant) and value.value is False), where(path, node)


def test_a_pickled_model_folder_is_refused(tmp_path, tiny_model):
    """A model folder that only has `pytorch_model.bin` (a pickle) is not loaded."""
    import shutil

    import torch
    from transformers import BertModel

    from tunefleet.tasks import get_task
    from tunefleet.train.models import build_model

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model, folder)
    model = BertModel.from_pretrained(tiny_model)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(OSError, match="safetensors"):
        build_model(get_task("text-classification"), str(folder), ["a", "b"], None)


# ---- loopback by default --------------------------------------------------------------------------

def test_serve_and_its_command_default_to_loopback():
    from tunefleet.serve.app import serve_forever

    assert inspect.signature(serve_forever).parameters["host"].default == "127.0.0.1"
    args = cli.build_parser().parse_args(["serve", "some-model"])
    assert args.host == "127.0.0.1"


def test_a_local_ray_gets_its_dashboard_on_loopback(monkeypatch):
    import ray

    from tunefleet.spec import spec_from_dict
    from tunefleet.cluster import start_ray

    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: seen.update(kwargs))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    start_ray(spec_from_dict({"name": "x", "task": "text-classification", "data": {"format": "synthetic"}}))
    assert seen["dashboard_host"] == "127.0.0.1" and seen["include_dashboard"] is True


def test_serve_binds_ray_dashboard_and_http_to_loopback(monkeypatch):
    import ray
    from ray import serve

    from tunefleet.tracking import registry
    from tunefleet.serve import app as tf_serve

    seen: dict = {}

    class Ready(Exception):
        pass

    def ready(summary):
        seen["url"] = summary["url"]
        raise Ready

    resolved = registry.ResolvedModel("m", 1, "champion", "/nowhere", {}, None)
    monkeypatch.setattr(registry, "resolve_model", lambda *a, **k: resolved)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: seen.update(ray=kwargs))
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(serve, "start", lambda **kwargs: seen.update(serve=kwargs))
    monkeypatch.setattr(serve, "run", lambda *a, **k: None)
    monkeypatch.setattr(serve, "shutdown", lambda: None)
    with pytest.raises(Ready):
        tf_serve.serve_forever(tf_serve.ServeOptions(model="m", tracking_uri="sqlite:///x.db"), on_ready=ready)
    assert seen["ray"]["dashboard_host"] == "127.0.0.1"
    assert seen["serve"]["http_options"]["host"] == "127.0.0.1"
    assert seen["url"].startswith("http://127.0.0.1:")


def test_no_code_binds_every_interface_by_default():
    for path in SOURCES:
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            assert not re.search(r"""["']0\.0\.0\.0["']""", code), f"{path.name}:{lineno}: {line.strip()}"


# ---- names that become registry entries, folders and URLs -----------------------------------------

@pytest.mark.parametrize("ref", ["../../etc/passwd", "a/../../b", "m; rm -rf /", "$(id)", "m`id`", "m name",
                                 "m/1/2", "m/-1", "m@../x", "m@Champion", "", "-m", ".hidden", "m\n", "m\x00"])
def test_model_references_are_validated(ref):
    from tunefleet.tracking.registry import RegistryError, parse_model_ref

    with pytest.raises(RegistryError):
        parse_model_ref(ref)


@pytest.mark.parametrize("name", ["../up", "a/b", "a b", "$(id)", "-rf", "x" * 101, ""])
def test_spec_names_are_registry_and_folder_safe(name):
    from tunefleet.spec import SpecError, spec_from_dict

    with pytest.raises(SpecError, match="name"):
        spec_from_dict({"name": name, "task": "text-classification", "data": {"format": "synthetic"}})
