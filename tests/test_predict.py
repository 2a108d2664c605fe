"""`rungefit predict`: x in from a file or a pipe, CSV x,y (and dy/dx) out, exactly as eval and grad compute them."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from rungefit.cli.app import app
from rungefit.errors import UsageError
from rungefit.runs import store as runs
from rungefit.study import predict as core
from rungefit.study.evaluate import member_prediction

from .helpers import REPO, rungefit_capped, runner


def predict(runs_dir, *options, input=None):
    return runner.invoke(app, ["predict", "--runs-dir", str(runs_dir), *options], input=input)


def rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.skipif(shutil.which("seq") is None, reason="needs the seq command")
def test_seq_piped_into_predict_gives_the_y_of_eval_x(spec_runs):
    runs_dir, name, _ = spec_runs["20:tanh,10:sigmoid,20:tanh,10:sigmoid", "float32"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    pipeline = f"seq -1 0.01 1 | {sys.executable} -m rungefit predict --run {name} --runs-dir {runs_dir}"
    result = subprocess.run(pipeline, shell=True, capture_output=True, text=True, env=env)
    # The spec runs train for a few epochs only: the one line on stderr says that they learned nothing.
    assert result.returncode == 0 and [line for line in result.stderr.splitlines() if "learned nothing" not in line] == [], result.stderr
    predicted = rows(result.stdout)
    assert len(predicted) == 201 and predicted[0]["x"] == "-1.0" and predicted[-1]["x"] == "1.0"
    x_options = [option for row in predicted for option in ("--x", row["x"])]
    evaluated = runner.invoke(app, ["eval", "--run", name, "--runs-dir", str(runs_dir), "--json", *x_options])
    assert evaluated.exit_code == 0, evaluated.output
    at_x = json.loads(evaluated.stdout)["at_x"]
    assert [float(row["y"]) for row in predicted] == [point["prediction"] for point in at_x]


def test_the_grad_column_is_the_autograd_derivative_of_rungefit_grad(quick_run):
    runs_dir, _, _ = quick_run
    x = [-0.9, -0.3, 0.0, 0.25, 0.8]
    result = predict(runs_dir, "--grad", input="".join(f"{v}\n" for v in x))
    assert result.exit_code == 0, result.output
    predicted = rows(result.stdout)
    assert list(predicted[0]) == ["x", "y", "dydx"]
    grad = runner.invoke(app, ["grad", "--runs-dir", str(runs_dir), "--json", *(o for v in x for o in ("--x", str(v)))])
    assert [float(row["dydx"]) for row in predicted] == [point["autograd"] for point in json.loads(grad.stdout)["points"]]


@pytest.mark.parametrize(
    "text, line",
    [
        ("0.1\n0.2\nabc\n0.3\n", 3),
        ("0.1\n\n1e400\n", 3),
        ("nan\n", 1),
        ("x\n0.5\ny\n", 3),
        ("0.1\n0,5\n0.2,3\n0.1.2\n", 4),
    ],
)
def test_a_bad_line_is_a_one_line_error_naming_it_and_nothing_is_written(quick_run, text, line):
    runs_dir, _, _ = quick_run
    result = predict(runs_dir, input=text)
    assert result.exit_code == 2 and result.stdout == ""
    assert f"line {line}:" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_not_utf8_and_empty_input_are_one_line_errors(quick_run, tmp_path):
    runs_dir, _, _ = quick_run
    (tmp_path / "bad.txt").write_bytes(b"0.1\n\xff\xfe\n")
    result = predict(runs_dir, str(tmp_path / "bad.txt"))
    assert result.exit_code == 2 and "bad.txt, line 2: not UTF-8" in result.stderr and result.stdout == ""
    result = predict(runs_dir, input="\n\n")
    assert result.exit_code == 2 and "no x values" in result.stderr
    result = predict(runs_dir, str(tmp_path / "missing.csv"))
    assert result.exit_code == 2 and "missing.csv: cannot read it" in result.stderr


def test_a_csv_file_gives_its_first_column_after_the_header(quick_run, tmp_path):
    runs_dir, _, _ = quick_run
    (tmp_path / "in.csv").write_text('x,label\n0.5,a\n"-0.5",b\n\n0.25\tc\n')
    result = predict(runs_dir, str(tmp_path / "in.csv"))
    assert result.exit_code == 0, result.output
    assert [row["x"] for row in rows(result.stdout)] == ["0.5", "-0.5", "0.25"]


def test_the_output_reads_back_as_input(quick_run):
    runs_dir, _, _ = quick_run
    first = predict(runs_dir, input="0.1\n0.7\n").stdout
    assert predict(runs_dir, input=first).stdout == first


def test_json_holds_the_same_numbers_as_the_csv(quick_run):
    runs_dir, _, _ = quick_run
    text = predict(runs_dir, "--grad", input="-0.2\n0.4\n").stdout
    doc = json.loads(predict(runs_dir, "--grad", "--json", input="-0.2\n0.4\n").stdout)
    assert doc["member"] == 0 and doc["points"] == 2
    assert [[float(v) for v in row.values()] for row in rows(text)] == [list(r) for r in zip(doc["x"], doc["y"], doc["dydx"], strict=True)]


def test_x_outside_the_domain_warns_of_extrapolation(quick_run):
    runs_dir, _, _ = quick_run
    result = predict(runs_dir, input="0.5\n1.5\n-2\n")
    assert result.exit_code == 0 and len(rows(result.stdout)) == 3
    assert "2 of the 3 x values lie outside [-1, 1]" in result.stderr


def test_chunked_passes_give_the_one_pass_numbers(quick_run, monkeypatch):
    runs_dir, _, _ = quick_run
    loaded = runs.load_run(runs_dir, None)
    x = np.linspace(-1, 1, 23)
    monkeypatch.setattr(core, "CHUNK", 5)
    chunked = core.predict(loaded.model, loaded.target, 0, x, with_grad=True)
    whole = member_prediction(loaded.model, loaded.target, 0, x)
    assert np.allclose(chunked.y, whole, rtol=1e-6, atol=0) and chunked.dydx.shape == (23,)


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"\xef\xbb\xbf0.5\n1", [0.5, 1.0]),  # a UTF-8 byte-order mark, no newline at the end
        (b"value\n 2 \n\n", [2.0]),
        (b"-1e-3\r\n", [-1e-3]),
    ],
)
def test_read_x_accepts_the_forms_files_come_in(data, expected):
    assert core.read_x(io.BytesIO(data), "in").tolist() == expected


def test_a_line_of_the_longest_length_is_read_and_one_byte_more_is_refused():
    longest = b"1" + b" " * (core.MAX_LINE_CHARS - 1)
    assert core.read_x(io.BytesIO(longest + b"\r\n" + longest), "in").tolist() == [1.0, 1.0]
    with pytest.raises(UsageError, match="line 2: longer than"):
        core.read_x(io.BytesIO(b"1\n" + longest + b" \n"), "in")


class Endless(io.RawIOBase):
    """A stream that repeats `pattern` forever, and counts the bytes read from it."""

    def __init__(self, pattern: bytes):
        self.pattern, self.read_bytes = pattern, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = (self.pattern * (len(buffer) // len(self.pattern) + 1))[: len(buffer)]
        buffer[: len(chunk)] = chunk
        self.read_bytes += len(chunk)
        return len(chunk)


@pytest.mark.parametrize("pattern, refusal", [(b"\0", "line 1: longer than"), (b"1\n", "more than 3 lines"), (b"\n", "more than 3 lines")])
def test_an_endless_input_is_refused_at_the_limit_having_read_no_further(monkeypatch, pattern, refusal):
    monkeypatch.setattr(core, "MAX_LINES", 3)
    endless = Endless(pattern)
    with pytest.raises(UsageError, match=refusal):
        core.read_x(io.BufferedReader(endless), "in")
    assert endless.read_bytes <= core.MAX_LINE_CHARS + 2 + io.DEFAULT_BUFFER_SIZE


@pytest.mark.parametrize("source", ["/dev/zero", "sparse", "stdin"])
def test_an_endless_or_huge_input_is_refused_in_one_line_within_a_memory_cap(quick_run, tmp_path, source):
    runs_dir, _, _ = quick_run
    sparse = tmp_path / "sparse.csv"
    with open(sparse, "wb") as handle:
        handle.truncate(3 << 30)  # 3 GB of zero bytes that take no room on disk
    args = {"/dev/zero": ["/dev/zero"], "sparse": [str(sparse)], "stdin": []}[source]
    with open("/dev/zero", "rb") as zeros:
        result = rungefit_capped("predict", *args, "--runs-dir", str(runs_dir), stdin=zeros)
    assert result.returncode == 2 and result.stdout == "", result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {args[0] if args else 'standard input'}, line 1: longer than {core.MAX_LINE_CHARS} characters; one x value per line"]
