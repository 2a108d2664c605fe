"""Untrusted and damaged files: every bad checkpoint is a one-line RunError, and none runs code."""

from __future__ import annotations

import functools
import io
import json
import math
import os
import pickle
import shutil
import threading

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rungefit.cli.app import app
from rungefit.config import TrainConfig
from rungefit.runs import commit as runsave
from rungefit.runs import format as runformat
from rungefit.runs import store as runs
from rungefit.runs.format import MODEL_FILE, VERSIONS
from rungefit.runs.read import FILE_LIMITS
from rungefit.training.metrics import best_member
from rungefit.training.train import fit

from .helpers import runner, stop_after


@pytest.fixture()
def run_copy(quick_run, tmp_path):
    """A private copy of the session's quick run, safe to damage."""
    runs_dir, run_dir, _ = quick_run
    shutil.copytree(run_dir, tmp_path / "r")
    return tmp_path, tmp_path / "r"


class RunsCode:
    """A pickle that would create a file when unpickled, if unpickling ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def rewrite_checkpoint(run_dir, change):
    checkpoint = torch.load(run_dir / "model.pt", weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, run_dir / "model.pt")


def test_intact_copy_loads(run_copy):
    runs_dir, _ = run_copy
    assert runs.load_run(runs_dir, "r").model.members == 1


@pytest.mark.parametrize("size", [0, 10, 1000])
def test_empty_or_truncated_checkpoint(run_copy, size):
    runs_dir, run_dir = run_copy
    data = (run_dir / "model.pt").read_bytes()
    (run_dir / "model.pt").write_bytes(data[:size])
    with pytest.raises(runs.RunError, match="not a readable rungefit checkpoint"):
        runs.load_run(runs_dir, "r")


@pytest.mark.parametrize("via_torch", [False, True])
def test_foreign_pickle_is_refused_and_never_executed(run_copy, tmp_path, via_torch):
    runs_dir, run_dir = run_copy
    marker = tmp_path / "code-ran"
    if via_torch:
        buffer = io.BytesIO()
        torch.save({"format": 1, "payload": RunsCode(marker)}, buffer)
        (run_dir / "model.pt").write_bytes(buffer.getvalue())
    else:
        (run_dir / "model.pt").write_bytes(pickle.dumps(RunsCode(marker)))
    with pytest.raises(runs.RunError, match="not a readable rungefit checkpoint"):
        runs.load_run(runs_dir, "r")
    assert not marker.exists()


def test_wrong_architecture(run_copy):
    runs_dir, run_dir = run_copy
    rewrite_checkpoint(run_dir, lambda c: c.update(layers="5:tanh"))
    with pytest.raises(runs.RunError, match="damaged or incomplete"):
        runs.load_run(runs_dir, "r")


def test_newer_format_is_refused_with_advice(run_copy):
    runs_dir, run_dir = run_copy
    rewrite_checkpoint(run_dir, lambda c: c.update(format=VERSIONS[MODEL_FILE] + 1))
    with pytest.raises(runs.RunError, match="upgrade rungefit"):
        runs.load_run(runs_dir, "r")


def test_not_a_rungefit_checkpoint(run_copy):
    runs_dir, run_dir = run_copy
    torch.save({"weights": torch.zeros(3)}, run_dir / "model.pt")
    with pytest.raises(runs.RunError, match="not a rungefit checkpoint"):
        runs.load_run(runs_dir, "r")


def test_damaged_config(run_copy):
    runs_dir, run_dir = run_copy
    (run_dir / "config.json").write_text("{not json")
    with pytest.raises(runs.RunError, match="damaged or incomplete"):
        runs.load_run(runs_dir, "r")


# ---------------------------------------------------------------- every file against its schema


@pytest.fixture(scope="module")
def interrupted_files():
    """The files of a two-member run interrupted after 2 of 4 epochs (resume reads all of them)."""
    result = fit(TrainConfig(points=60, epochs=4, seeds=(0, 1)), should_stop=stop_after(5))
    assert result.status == "interrupted"
    return runformat.run_files(result, {}, {})


@pytest.fixture()
def interrupted(tmp_path, interrupted_files):
    """(runs_dir, run_dir) of a fresh copy of the interrupted run, named "r"."""
    return tmp_path, runsave.save_new_run(tmp_path, "r", interrupted_files)


def load_and_resume(runs_dir, name="r"):
    """What eval, grad and train --resume read of a run."""
    loaded = runs.load_run(runs_dir, name)
    best_member(loaded.summary)
    return runs.resume_state(loaded)


def edit_json(path, change):
    document = json.loads(path.read_text())
    path.write_text(json.dumps(change(document)))


def assign(key, value):
    def change(document):
        document[key] = value
        return document

    return change


CONFIG_DAMAGE = {
    "an array": (lambda c: [], "must be an object"),
    "null": (lambda c: None, "must be an object"),
    "a string": (lambda c: "config", "must be an object"),
    "test_points a string": (assign("test_points", "100"), "test_points must be a whole number"),
    "test_points null": (assign("test_points", None), "test_points must be a whole number"),
    "test_points an array": (assign("test_points", [1]), "test_points must be a whole number"),
    "test_points true": (assign("test_points", True), "test_points must be a whole number"),
    "test_points huge": (assign("test_points", 10**30), "test_points must be a whole number in 2…"),
    "lr NaN": (assign("lr", math.nan), "--lr (lr) must be a positive finite number"),
    "lr a string": (assign("lr", "x"), "--lr (lr) must be a positive finite number"),
    "seeds a string": (assign("seeds", "a"), "--seeds (seeds) must be 1…"),
    "a seed a float": (assign("seeds", [0, 1.5]), "(seeds) must be 1…100000 whole numbers"),
    "batch_size 0": (assign("batch_size", 0), "--batch-size (batch_size) must be a whole number in 1…"),
    "betas a string": (assign("betas", "ab"), "betas must be Adam's two moment decay rates"),
    "betas of three": (assign("betas", [0.9, 0.9, 0.9]), "betas must be Adam's two moment decay rates"),
    "an unknown schedule": (assign("schedule", "[/]"), "--schedule (schedule) must be one of"),
    "layers a number": (assign("layers", 5), "--layers (layers) must be a layer spec"),
}

SUMMARY_DAMAGE = {
    "an empty object": (lambda s: {}, "'status' is missing"),
    "an array": (lambda s: [], "must be an object"),
    "members a string": (assign("members", "x"), "'members' must be an array"),
    "a member a number": (assign("members", [1, 2]), "'members[0]' must be an object"),
    "a member without val_mse": (lambda s: {**s, "members": [{k: v for k, v in m.items() if k != "val_mse"} for m in s["members"]]}, "'members[0].val_mse' is missing"),
    "one member too many": (lambda s: {**s, "members": s["members"] * 2}, "'members' must have exactly 2 entries"),
    "a negative MSE": (lambda s: {**s, "members": [{**m, "test_mse": -1.0} for m in s["members"]]}, "'members[0].test_mse' must be a number ≥ 0"),
    "lr_auto nested deeply": (assign("lr_auto", functools.reduce(lambda inner, _: [inner], range(50), 0)), "'lr_auto' is nested more than"),
    "a status that model.pt contradicts": (assign("status", "complete"), "summary.json disagrees with model.pt"),
    "epochs that model.pt contradicts": (assign("epochs", 4), "summary.json disagrees with model.pt"),
}


def with_tensor(path, make):
    """A change to the checkpoint that sets the tensor at a dotted path to make(tensor)."""

    def change(checkpoint):
        *parents, last = path
        holder = functools.reduce(lambda d, key: d[key], parents, checkpoint)
        holder[last] = make(holder[last])

    return change


CHECKPOINT_DAMAGE = {
    "format a string": (lambda c: c.update(format="1"), "format must be a whole number"),
    "format true": (lambda c: c.update(format=True), "format must be a whole number"),
    "layers a number": (lambda c: c.update(layers=5), "'layers' must be a string"),
    "other layers": (lambda c: c.update(layers="5:tanh"), "'layers' must be config.json's layers"),
    "members -1": (lambda c: c.update(members=-1), "'members' must be 2"),
    "epochs_run a string": (lambda c: c.update(epochs_run="2"), "'epochs_run' must be an integer"),
    "an unknown status": (lambda c: c.update(status="running"), "'status' must be one of"),
    "integer weights": (with_tensor(("state_dict", "layers.0.weight"), lambda t: t.to(torch.int64)), "'state_dict.layers.0.weight' must be a torch.float32 tensor"),
    "sparse weights": (with_tensor(("state_dict", "layers.0.weight"), lambda t: t.to_sparse()), "must be a dense CPU tensor"),
    "meta weights": (with_tensor(("state_dict", "layers.0.bias"), lambda t: t.to("meta")), "layers.0.bias"),
    "a NaN weight": (with_tensor(("state_dict", "layers.1.weight"), lambda t: t.index_fill(2, torch.tensor([0]), math.nan)), "holds non-finite values"),
    "an infinite moment": (with_tensor(("optimizer", "exp_avg_sq"), lambda t: t + math.inf), "'optimizer.exp_avg_sq' holds non-finite values"),
    "a missing tensor": (lambda c: c["state_dict"].pop("layers.4.bias"), "'state_dict.layers.4.bias' is missing"),
    "an extra tensor": (lambda c: c["state_dict"].update(extra=torch.zeros(1)), "unexpected entries 'extra'"),
    "a short history": (with_tensor(("history", "val_mse"), lambda t: t[:1]), "'history.val_mse' must be a torch.float64 tensor of shape [2, 2]"),
    "a step count a float": (lambda c: c["optimizer"].update(step=4.0), "'optimizer.step' must be an integer"),
}


def assert_refused(runs_dir, file, fragment):
    with pytest.raises(runs.RunError) as refused:
        load_and_resume(runs_dir)
    message = str(refused.value)
    assert len(message.splitlines()) == 1
    assert file in message and fragment in message, message


DAMAGE = {"config.json": CONFIG_DAMAGE, "summary.json": SUMMARY_DAMAGE, "model.pt": CHECKPOINT_DAMAGE}


@pytest.mark.parametrize("file, case", [(file, case) for file, cases in DAMAGE.items() for case in cases])
def test_a_damaged_run_file_is_one_line_naming_the_file_and_the_field(interrupted, file, case):
    runs_dir, run_dir = interrupted
    change, fragment = DAMAGE[file][case]
    if file == "model.pt":
        rewrite_checkpoint(run_dir, change)
    else:
        edit_json(run_dir / file, change)
    assert_refused(runs_dir, file, fragment)


def test_json_nested_a_hundred_thousand_deep_is_refused(interrupted):
    runs_dir, run_dir = interrupted
    (run_dir / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    assert_refused(runs_dir, "config.json", "nested too deeply")


def call_with_deadline(function, timeout: float = 30.0):
    """function() in a thread; the test fails if it has not returned within timeout (a hang)."""
    outcome = {}

    def run():
        try:
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001 — handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{function} hung"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.mark.parametrize("file", ["config.json", "summary.json", "model.pt"])
@pytest.mark.parametrize("kind", ["a FIFO", "a link to /dev/zero", "a directory"])
def test_a_run_file_that_is_not_a_regular_file_is_refused_without_blocking(interrupted, file, kind):
    runs_dir, run_dir = interrupted
    (run_dir / file).unlink()
    {"a FIFO": lambda p: os.mkfifo(p), "a link to /dev/zero": lambda p: p.symlink_to("/dev/zero"), "a directory": lambda p: p.mkdir()}[kind](run_dir / file)
    with pytest.raises(runs.RunError, match=f"{file} is not a regular file"):
        call_with_deadline(lambda: runs.load_run(runs_dir, "r"))


def test_a_run_file_larger_than_any_run_writes_is_refused_unread(interrupted, monkeypatch):
    runs_dir, run_dir = interrupted
    monkeypatch.setitem(FILE_LIMITS, "summary.json", 100)
    with pytest.raises(runs.RunError, match=r"summary.json holds \d+ bytes, more than its 100 at most"):
        runs.load_run(runs_dir, "r")


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"../r\n", "starts with '.'"),
        (b"/abs/path\n", "a run name, not a path"),
        (b"\xff\xfe\x00binary", "has characters other than"),
        (b"[/]\n", "'[/]'"),
        (b"x" * 200, "longer than 100 characters"),
        (b"x" * 5000, "more than its 1024 at most"),
    ],
)
def test_a_damaged_latest_is_one_line_saying_to_delete_it(interrupted, content, fragment):
    runs_dir, _ = interrupted
    (runs_dir / "latest").write_bytes(content)
    with pytest.raises(runs.RunError, match="delete it") as refused:
        runs.load_run(runs_dir, None)
    assert fragment in str(refused.value) and "latest" in str(refused.value)


def test_a_latest_that_is_a_directory_is_refused(interrupted):
    runs_dir, _ = interrupted
    (runs_dir / "latest").unlink()
    (runs_dir / "latest").mkdir()
    with pytest.raises(runs.RunError, match="latest is not a regular file .*delete it"):
        call_with_deadline(lambda: runs.load_run(runs_dir, None))


def test_a_training_beside_a_latest_that_is_a_directory_saves_its_run(tmp_path):
    (tmp_path / "latest").mkdir(parents=True)
    result = runner.invoke(app, ["train", "--points", "60", "--epochs", "2", "--runs-dir", str(tmp_path), "--name", "r", "--quiet"])
    assert result.exit_code in (0, 1) and "internal error" not in result.output, result.output
    assert runs.load_run(tmp_path, "r").summary["status"] == "complete" and (tmp_path / "latest").is_dir()

@pytest.mark.parametrize(
    "change, message",
    [
        (assign("seeds", "a"), "--seeds (seeds) must be 1…"),
        (assign("lr", "x"), "--lr (lr) must be a positive finite number"),
        (assign("batch_size", 0), "--batch-size (batch_size) must be a whole number in 1…"),
        (assign("betas", "ab"), "betas must be Adam's two moment decay rates"),
    ],
)
def test_resuming_a_run_with_a_damaged_config_is_one_line_exit_1(interrupted, change, message):
    runs_dir, run_dir = interrupted
    edit_json(run_dir / "config.json", change)
    result = runner.invoke(app, ["train", "--resume", "r", "--runs-dir", str(runs_dir)])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "config.json" in lines[0] and message in lines[0]


# ---------------------------------------------------------------- mutations of a real run (hypothesis)

LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(), st.text(max_size=20),
    st.sampled_from(["[/]", "[red]x", "../r", "/abs", "１", "1_0", "x" * 300]),
)
JSON_VALUES = st.recursive(LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=8)
TENSORS = st.builds(
    lambda dtype, shape, fill, sparse: (lambda t: t.to_sparse() if sparse and t.dim() else t)(torch.full(shape, fill).to(dtype)),
    st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int64, torch.bool]),
    st.lists(st.integers(0, 3), max_size=3),
    st.sampled_from([0.0, 1.0, math.nan, math.inf]),
    st.booleans(),
)


def places(value, path=()):
    """Every place in a nested value, as key paths (the whole value is ())."""
    yield path
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from places(child, (*path, key))


def mutate(data, document, replacement):
    """The document with one place replaced (by `replacement`), deleted, nested deeper, or
    given a new key."""
    path = data.draw(st.sampled_from(list(places(document))))
    action = data.draw(st.sampled_from(["replace", "delete", "nest", "add"] if path else ["replace", "nest"]))
    if not path:
        return replacement if action == "replace" else [[[document]]]
    holder = functools.reduce(lambda inner, key: inner[key], path[:-1], document)
    key = path[-1]
    if action == "replace":
        holder[key] = replacement
    elif action == "delete":
        del holder[key]
    elif action == "nest":
        holder[key] = functools.reduce(lambda inner, _: [inner], range(data.draw(st.integers(1, 60))), holder[key])
    elif isinstance(holder, dict):
        holder[data.draw(st.text(max_size=8))] = replacement
    return document


def damaged_bytes(data, good: bytes) -> bytes:
    """good, truncated or with a few bytes overwritten."""
    if data.draw(st.booleans()):
        return good[: data.draw(st.integers(0, len(good)))]
    damaged = bytearray(good)
    for _ in range(data.draw(st.integers(1, 4))):
        damaged[data.draw(st.integers(0, len(good) - 1))] = data.draw(st.integers(0, 255))
    return bytes(damaged)


def mutated_file(data, file: str, good: bytes, value, tensor) -> bytes:
    """good, damaged as bytes or, parsed, at one place: value (a JSON value) or, in a
    checkpoint, perhaps tensor put there."""
    if data.draw(st.integers(0, 3)) == 0:
        return damaged_bytes(data, good)
    if file == "model.pt":
        checkpoint = torch.load(io.BytesIO(good), weights_only=True)
        buffer = io.BytesIO()
        torch.save(mutate(data, checkpoint, tensor if data.draw(st.booleans()) else value), buffer)
        return buffer.getvalue()
    if file == "latest":
        return data.draw(st.one_of(st.binary(max_size=40), st.text(max_size=40).map(str.encode)))
    return json.dumps(mutate(data, json.loads(good), value)).encode()


@pytest.mark.parametrize("file", ["config.json", "summary.json", "model.pt", "latest"])
def test_any_mutation_of_a_run_file_is_a_one_line_error_or_a_valid_run(tmp_path, interrupted_files, file):
    runsave.save_new_run(tmp_path, "r", interrupted_files)
    good = {name: (tmp_path / "r" / name).read_bytes() for name in ("config.json", "summary.json", "model.pt")}
    good["latest"] = (tmp_path / "latest").read_bytes()

    @settings(max_examples=20, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data(), value=JSON_VALUES, tensor=TENSORS)
    def property_holds(data, value, tensor):
        for name, content in good.items():
            ((tmp_path / name) if name == "latest" else (tmp_path / "r" / name)).write_bytes(content)
        target = (tmp_path / file) if file == "latest" else (tmp_path / "r" / file)
        target.write_bytes(mutated_file(data, file, good[file], value, tensor))
        try:
            call_with_deadline(lambda: load_and_resume(tmp_path, None if file == "latest" else "r"))
        except runs.RunError as error:
            assert len(str(error).splitlines()) == 1, str(error)

    property_holds()
