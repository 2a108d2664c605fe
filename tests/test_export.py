"""`rungefit export` and the network behind it: the nn.Sequential, pt2, ONNX and safetensors files
each compute what `eval` computes, and the files load where rungefit cannot be imported."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest
import torch

import rungefit
from rungefit import files
from rungefit.cli.app import app
from rungefit.runs import store as runs
from rungefit.study.evaluate import member_prediction

from .helpers import SPECS, runge, runner

DEFAULT = SPECS[0]
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}


def eval_grid(loaded, member: int) -> tuple[np.ndarray, np.ndarray]:
    """The run's test grid and eval's predictions on it (evaluate.member_prediction, as eval scores)."""
    x = loaded.target.test_grid(loaded.config.test_points, dtype=loaded.model.dtype).double().numpy()
    return x, member_prediction(loaded.model, loaded.target, member, x)


def relative_gap(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def export(runs_dir, name, *options) -> dict:
    result = runner.invoke(app, ["export", "--run", name, "--runs-dir", str(runs_dir), "--json", *options])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layers", SPECS)
def test_the_sequential_reproduces_evals_predictions_and_test_mse(spec_runs, layers, dtype):
    runs_dir, name, summary = spec_runs[layers, dtype]
    loaded = rungefit.open_run(name, runs_dir)
    for member in range(2):
        network = rungefit.load(name, runs_dir, member=member)
        x, expected = eval_grid(loaded, member)
        inputs = torch.as_tensor(x).to(loaded.model.dtype).unsqueeze(1)
        got = network(inputs).squeeze(1).double().numpy()
        assert relative_gap(got, expected) <= TOLERANCE[dtype]
        test_mse = float(np.mean((got - runge(inputs.squeeze(1).double().numpy())) ** 2))
        assert math.isclose(test_mse, summary["members"][member]["test_mse"], rel_tol=1e-4)


# Run in a fresh interpreter: -I ignores PYTHONPATH and the current directory, and a finder refuses
# rungefit, so that the file must load with torch alone (the editable install would still find it).
NO_RUNGEFIT = """
import sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")

BLOCKED = BLOCKED_NAMES
sys.meta_path.insert(0, Refuse())
try:
    import rungefit
except ImportError:
    pass
else:
    raise SystemExit("rungefit is importable")
"""


def run_without(blocked: set[str], code: str, cwd) -> str:
    script = NO_RUNGEFIT.replace("BLOCKED_NAMES", repr(sorted(blocked))) + textwrap.dedent(code)
    result = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_pt2_file_gives_evals_predictions_where_rungefit_cannot_be_imported(spec_runs, tmp_path):
    runs_dir, name, _ = spec_runs[DEFAULT, "float32"]
    doc = export(runs_dir, name, "--format", "pt2", "--out", str(tmp_path / "net.pt2"))
    loaded = runs.load_run(runs_dir, name)
    x, expected = eval_grid(loaded, doc["member"])
    code = f"""
        import json
        import torch
        extra = {{"rungefit.json": ""}}
        program = torch.export.load({str(tmp_path / "net.pt2")!r}, extra_files=extra)
        x = torch.tensor({x.tolist()!r}, dtype=torch.float32).unsqueeze(1)
        y = program.module()(x)
        print(json.dumps({{"y": y.squeeze(1).double().tolist(), "one": program.module()(x[:1]).shape[0], "meta": json.loads(extra["rungefit.json"])}}))
        assert "rungefit" not in sys.modules
    """
    out = json.loads(run_without({"rungefit"}, code, tmp_path))
    assert relative_gap(np.array(out["y"]), expected) <= 1e-5
    assert out["one"] == 1  # the batch dimension is dynamic
    assert out["meta"]["layers"] == DEFAULT and out["meta"]["target"] == "runge"


ONNX_MISSING = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]


@pytest.mark.skipif(bool(ONNX_MISSING), reason=f"needs {', '.join(ONNX_MISSING)} (pip install -e '.[test]')")
@pytest.mark.parametrize("layers", [*SPECS[:2], SPECS[3]])  # the reference, gelu/relu, and sin (a module of ours)
def test_the_onnx_file_gives_evals_predictions_in_onnxruntime(spec_runs, tmp_path, layers):
    import onnx
    import onnxruntime

    runs_dir, name, _ = spec_runs[layers, "float32"]
    doc = export(runs_dir, name, "--format", "onnx", "--out", str(tmp_path / "net.onnx"))
    loaded = runs.load_run(runs_dir, name)
    x, expected = eval_grid(loaded, doc["member"])
    session = onnxruntime.InferenceSession(str(tmp_path / "net.onnx"))
    (got,) = session.run(["y"], {"x": x.astype(np.float32)[:, None]})
    assert relative_gap(got[:, 0].astype(np.float64), expected) <= 1e-5
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "net.onnx")).metadata_props}
    assert props["layers"] == layers and json.loads(props["domain"]) == [-1.0, 1.0]


def test_safetensors_files_rebuild_each_network_without_torch(spec_runs, tmp_path):
    files, expected = [], []
    for layers in SPECS:
        runs_dir, name, _ = spec_runs[layers, "float64"]
        path = tmp_path / f"{name}.safetensors"
        doc = export(runs_dir, name, "--format", "safetensors", "--out", str(path))
        files.append(str(path))
        expected.append(eval_grid(runs.load_run(runs_dir, name), doc["member"]))
    # An independent forward pass in NumPy, from the metadata and the tensors alone.
    code = f"""
        import json, math
        import numpy as np
        from safetensors import safe_open
        SIGMA = {{
            "tanh": np.tanh, "sigmoid": lambda z: 1 / (1 + np.exp(-z)), "relu": lambda z: np.maximum(z, 0),
            "gelu": lambda z: 0.5 * z * (1 + np.vectorize(math.erf)(z / math.sqrt(2))),
            "silu": lambda z: z / (1 + np.exp(-z)), "softplus": lambda z: np.where(z > 20, z, np.log1p(np.exp(z))),
            "identity": lambda z: z, "sin": np.sin,
        }}
        out = []
        for path, x in zip({files!r}, {[x.tolist() for x, _ in expected]!r}):
            with safe_open(path, framework="np") as f:
                meta, tensors = f.metadata(), {{key: f.get_tensor(key) for key in f.keys()}}
            a = np.array(x)[:, None]
            activations = meta["activations"].split(",")
            for index in range(len(activations) + 1):
                a = a @ tensors[f"{{2 * index}}.weight"].T + tensors[f"{{2 * index}}.bias"]
                if index < len(activations):
                    a = SIGMA[activations[index]](a)
            out.append({{"y": a[:, 0].tolist(), "meta": meta}})
        print(json.dumps(out))
        assert "torch" not in sys.modules
    """
    results = json.loads(run_without({"rungefit", "torch"}, code, tmp_path))
    for layers, (_, prediction), result in zip(SPECS, expected, results, strict=True):
        assert relative_gap(np.array(result["y"]), prediction) <= 1e-12
        meta = result["meta"]
        assert (meta["layers"], meta["dtype"], meta["target"], json.loads(meta["domain"])) == (layers, "float64", "runge", [-1.0, 1.0])


def test_the_default_file_sits_in_the_run_and_is_kept_without_force(quick_run, tmp_path):
    runs_dir, run_dir, _ = quick_run
    shutil.copytree(run_dir, tmp_path / "r")
    doc = export(tmp_path, "r", "--format", "safetensors")
    path = tmp_path / "r" / "member-0.safetensors"
    assert doc["out"] == str(path) and path.stat().st_size == doc["bytes"]
    path.write_bytes(b"mine")
    result = runner.invoke(app, ["export", "--run", "r", "--runs-dir", str(tmp_path), "--format", "safetensors"])
    assert result.exit_code == 1 and "--force" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert path.read_bytes() == b"mine"
    export(tmp_path, "r", "--format", "safetensors", "--force")
    assert path.stat().st_size == doc["bytes"]
    assert not list((tmp_path / "r").glob(".*.tmp"))


def test_the_metadata_carries_the_runs_target_and_domain(quick_run, tmp_path):
    runs_dir, run_dir, _ = quick_run
    shutil.copytree(run_dir, tmp_path / "r")
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    (tmp_path / "r" / "config.json").write_text(json.dumps({**config, "target": "sin(3*x)", "domain": [0, 2]}))
    doc = export(tmp_path, "r", "--format", "safetensors", "--out", str(tmp_path / "n.safetensors"))
    assert doc["metadata"]["target"] == "sin(3*x)" and json.loads(doc["metadata"]["domain"]) == [0.0, 2.0]


@pytest.mark.parametrize("domain", [[1, 0], ["a", 2], [0, 1, 2], 5])
def test_a_damaged_domain_is_a_one_line_run_error(quick_run, tmp_path, domain):
    runs_dir, run_dir, _ = quick_run
    shutil.copytree(run_dir, tmp_path / "r")
    (tmp_path / "r" / "config.json").write_text(json.dumps({**json.loads((run_dir / "config.json").read_text()), "domain": domain}))
    with pytest.raises(runs.RunError, match="config.json"):
        runs.load_run(tmp_path, "r")


def test_onnx_without_its_packages_names_the_extra(quick_run, tmp_path, monkeypatch):
    runs_dir, _, _ = quick_run
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # makes `import onnxscript` fail
    result = runner.invoke(app, ["export", "--runs-dir", str(runs_dir), "--run", "quick", "--format", "onnx", "--out", str(tmp_path / "n.onnx")])
    assert result.exit_code == 1
    assert 'pip install "rungefit[onnx]"' in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "n.onnx").exists()


@pytest.mark.parametrize(
    "options, code, message",
    [
        (["--format", "zip"], 2, "--format"),
        (["--format", "pt2", "--member", "3"], 2, "--member 3"),
        (["--format", "safetensors", "--out", "{tmp}/missing/n.safetensors"], 1, "cannot write"),
        (["--format", "safetensors", "--out", "{tmp}"], 1, "it is a directory, not a regular file"),
    ],
)
def test_bad_export_options_are_one_line_errors(quick_run, tmp_path, options, code, message):
    runs_dir, _, _ = quick_run
    argv = ["export", "--runs-dir", str(runs_dir), "--run", "quick", *(o.format(tmp=tmp_path) for o in options)]
    result = runner.invoke(app, argv)
    assert result.exit_code == code and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# What may stand where export writes, other than a regular file: each made in a folder of the test's own.
NOT_FILES = {
    "FIFO": lambda path: os.mkfifo(path),
    "symbolic link": lambda path: path.symlink_to(path.with_name("target")),
    "directory": lambda path: path.mkdir(),
    "character device": lambda path: os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3)),  # a copy of /dev/null
}


def kind_of(path) -> str:
    mode = os.lstat(path).st_mode
    return next(kind for kind, test in KINDS.items() if test(mode))


KINDS = {"FIFO": stat.S_ISFIFO, "symbolic link": stat.S_ISLNK, "directory": stat.S_ISDIR, "character device": stat.S_ISCHR, "file": stat.S_ISREG}


@pytest.mark.parametrize("force", [[], ["--force"]])
@pytest.mark.parametrize("kind", list(NOT_FILES))
def test_export_never_replaces_what_is_not_a_regular_file(quick_run, tmp_path, kind, force):
    runs_dir, _, _ = quick_run
    (tmp_path / "target").write_bytes(b"the link's target")
    out = tmp_path / "out.safetensors"
    try:
        NOT_FILES[kind](out)
    except PermissionError:
        pytest.skip(f"this process may not make a {kind}")
    result = runner.invoke(app, ["export", "--runs-dir", str(runs_dir), "--format", "safetensors", "--out", str(out), *force])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"error: cannot write {out} (it is a {kind}, not a regular file; rungefit replaces only regular files); choose another --out"]
    assert kind_of(out) == kind and (tmp_path / "target").read_bytes() == b"the link's target"
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["out.safetensors", "target"]  # no temporary file left


def test_export_to_dev_null_is_refused_before_anything_is_written(quick_run, monkeypatch):
    """As root, replacing /dev/null would remove the device: every rename is guarded here, so that
    even a broken check cannot do it, and the check must refuse before a temporary file is made."""
    runs_dir, _, _ = quick_run

    def never(*args, **kwargs):
        raise AssertionError(f"a write reached {args}")

    for module, name in ((os, "replace"), (os, "rename"), (tempfile, "mkstemp")):
        monkeypatch.setattr(module, name, never)
    result = runner.invoke(app, ["export", "--runs-dir", str(runs_dir), "--format", "safetensors", "--out", "/dev/null", "--force"])
    monkeypatch.undo()
    assert result.exit_code == 1 and "cannot write /dev/null (it is a character device, not a regular file" in result.stderr
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)


def test_atomic_writes_never_replace_what_is_not_a_regular_file(tmp_path):
    for kind, make in NOT_FILES.items():
        path = tmp_path / kind.replace(" ", "-")
        try:
            make(path)
        except PermissionError:
            continue
        with pytest.raises(FileExistsError, match=f"it is a {kind}, not a regular file"):
            files.atomic_write(path, b"new")
        with pytest.raises(FileExistsError):
            files.write_files(tmp_path, {path.name: b"new"})
        assert kind_of(path) == kind
    files.atomic_write(tmp_path / "file", b"old")
    files.atomic_write(tmp_path / "file", b"new")  # a regular file is replaced
    assert (tmp_path / "file").read_bytes() == b"new" and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    "inside, refusal",
    [
        ("q/model.pt", "lies inside the run {runs}/q"),
        ("q/mine.onnx", "lies inside the run {runs}/q"),
        ("q/folder/n.onnx", "lies inside the run {runs}/q"),
        ("../other/r/n.onnx", "lies inside the run {tmp}/other/r"),  # a run of another runs directory
        ("latest", "is the runs directory's `latest`"),
    ],
)
def test_export_out_inside_a_run_or_onto_latest_is_refused(quick_run, tmp_path, inside, refusal):
    _, run_dir, _ = quick_run
    shutil.copytree(run_dir, tmp_path / "runs" / "q")
    shutil.copytree(run_dir, tmp_path / "other" / "r")
    (tmp_path / "runs" / "q" / "folder").mkdir()
    (tmp_path / "runs" / "latest").write_text("q\n")
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    out = tmp_path / "runs" / inside
    result = runner.invoke(app, ["export", "--runs-dir", str(tmp_path / "runs"), "--run", "q", "--format", "safetensors", "--out", str(out), "--force"])
    assert result.exit_code == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"--out {out} " + refusal.format(runs=tmp_path / "runs", tmp=tmp_path) in result.stderr
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before
    assert runs.load_run(tmp_path / "runs", "q").epochs_run == runs.load_run(run_dir.parent, "quick").epochs_run
    # Beside the runs (in the runs directory itself) is no run's: written there.
    assert export(tmp_path / "runs", "q", "--format", "safetensors", "--out", str(tmp_path / "runs" / "q.safetensors"))["bytes"] > 0
