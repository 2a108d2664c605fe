"""The target: presets and formulas (f, f' by autograd, kinks), the safe parser and its bounds,
the domain, data files, and the training, validation and test points."""

from __future__ import annotations

import math
import sys
import tracemalloc
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rungefit import targets
from rungefit.config import FORMULA_FUNCTIONS, PRESETS, TrainConfig, validation_size
from rungefit.errors import UsageError
from rungefit.targets import resolve
from rungefit.targets.datafile import read_points
from rungefit.targets.domain import check_grid, parse_domain
from rungefit.targets.formula import parse_formula
from rungefit.targets.target import function_target

from .helpers import DATA, runge, runge_prime

DEFAULT = resolve(TrainConfig())


# ---------------------------------------------------------------- the default target


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_default_target_computes_exactly_what_the_runge_function_always_has(dtype):
    x = torch.rand(3, 500, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(dtype) * 2 - 1
    assert torch.equal(DEFAULT(x), runge(x))
    points = np.linspace(-1, 1, 1001)
    assert np.array_equal(DEFAULT(points), runge(points))


def test_test_grid_is_100_equally_spaced_points_with_both_ends():
    x = DEFAULT.test_grid(100, dtype=torch.float64)
    assert x.shape == (100,)
    assert x[0] == -1.0 and x[-1] == 1.0
    assert torch.allclose(torch.diff(x), torch.full((99,), 2 / 99, dtype=torch.float64))


def test_split_sizes_and_range():
    data = DEFAULT.split(torch.tensor([0, 1, 2]), 200, 0.3, dtype=torch.float64)
    assert data.x_train.shape == (3, 140) and data.x_val.shape == (3, 60)
    for x in (data.x_train, data.x_val):
        assert x.min() >= -1 and x.max() < 1
    assert torch.equal(data.y_train, runge(data.x_train)) and torch.equal(data.y_val, runge(data.x_val))


def test_split_is_a_function_of_the_seed_alone():
    alone = DEFAULT.split(torch.tensor([7]), 50, 0.3, dtype=torch.float64)
    stacked = DEFAULT.split(torch.tensor([3, 7, 9]), 50, 0.3, dtype=torch.float64)
    assert torch.equal(alone.x_train[0], stacked.x_train[1])
    assert torch.equal(alone.x_val[0], stacked.x_val[1])
    assert not torch.equal(stacked.x_train[0], stacked.x_train[1])


def test_training_and_validation_points_are_disjoint_and_uniform():
    data = DEFAULT.split(torch.tensor([0]), 20000, 0.3, dtype=torch.float64)
    everything = torch.cat([data.x_train[0], data.x_val[0]])
    assert everything.unique().numel() == 20000
    # Uniform on [-1, 1]: mean 0, variance 1/3 (standard errors ≈ 0.004 and 0.002).
    assert abs(everything.mean().item()) < 0.02
    assert abs(everything.var().item() - 1 / 3) < 0.01


def test_a_shifted_domain_draws_its_points_and_grid_there():
    shifted = function_target("runge", (0.0, 3.0))
    data = shifted.split(torch.tensor([0]), 20000, 0.3, dtype=torch.float64)
    everything = torch.cat([data.x_train[0], data.x_val[0]])
    assert everything.min() >= 0 and everything.max() < 3 and abs(everything.mean().item() - 1.5) < 0.05
    grid = shifted.test_grid(7, dtype=torch.float64)
    assert grid.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5, -0.1, math.nan])
def test_bad_validation_fraction(fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        validation_size(100, fraction)


def test_split_that_would_leave_an_empty_set():
    with pytest.raises(ValueError, match="use more points"):
        validation_size(2, 0.1)


# ---------------------------------------------------------------- presets and formulas

# Each preset's f and f' in closed form, written independently of the formula language.
CLOSED_FORMS = {
    "runge": (runge, runge_prime),
    "abs": (np.abs, np.sign),
    "step": (lambda x: (x >= 0).astype(float), np.zeros_like),
    "sine": (lambda x: np.sin(np.pi * x), lambda x: np.pi * np.cos(np.pi * x)),
    "wave": (lambda x: np.sin(8 * x), lambda x: 8 * np.cos(8 * x)),
}


def test_every_preset_has_a_closed_form_here():
    assert set(CLOSED_FORMS) == set(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_and_its_autograd_derivative_match_the_closed_forms(name):
    preset = function_target(name, (-1.0, 1.0))
    f, f_prime = CLOSED_FORMS[name]
    x = np.linspace(-1, 1, 2001)  # 0 included: the kinks are checked below
    np.testing.assert_allclose(preset(x), f(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(preset(torch.from_numpy(x)).numpy(), f(x), rtol=1e-12, atol=1e-12)
    smooth = np.abs(x) > 1e-6 if preset.kinks else np.ones(x.shape, dtype=bool)
    slope = preset.derivative(x)
    np.testing.assert_allclose(slope[smooth], f_prime(x[smooth]), rtol=1e-12, atol=1e-12)
    assert np.isnan(slope[~smooth]).all()


@pytest.mark.parametrize("name", ["abs", "step"])
def test_the_kink_and_the_jump_are_not_differentiable_and_their_presets_say_where(name):
    preset = function_target(name, (-1.0, 1.0))
    assert preset.kinks == (0.0,)
    assert preset.differentiable(np.array([-0.5, 0.0, 0.5])).tolist() == [True, False, True]
    assert function_target(name, (0.5, 2.0)).kinks == ()  # not on this domain


@pytest.mark.parametrize(
    "formula, derivative",
    [
        ("exp(-x**2) * cos(5*x)", lambda x: -2 * x * np.exp(-(x**2)) * np.cos(5 * x) - 5 * np.exp(-(x**2)) * np.sin(5 * x)),
        ("x**3 - 2*x + sqrt(x + 2) / tanh(x + 3)", lambda x: 3 * x**2 - 2 + (0.5 / np.sqrt(x + 2)) / np.tanh(x + 3) - np.sqrt(x + 2) / np.sinh(x + 3) ** 2),
        ("log(1 + x*x) * arctan(x) - cosh(x) + sinh(2*x)", lambda x: 2 * x / (1 + x * x) * np.arctan(x) + np.log(1 + x * x) / (1 + x * x) - np.sinh(x) + 2 * np.cosh(2 * x)),
    ],
)
def test_autograd_derivative_of_a_formula_matches_the_hand_derived_one(formula, derivative):
    target = function_target(formula, (-1.0, 1.0))
    x = np.linspace(-1, 1, 1001)
    np.testing.assert_allclose(target.derivative(x), derivative(x), rtol=1e-12, atol=1e-12)
    assert target.kinks == ()


def test_a_formula_is_the_same_on_numpy_and_on_torch():
    target = function_target("max(sin(3*x), x/2) + min(e**x, 2) - abs(x - pi/10) * step(x) + sign(x + 0.5) + tan(x)", (-1.0, 1.0))
    x = np.linspace(-1, 1, 777)
    np.testing.assert_allclose(target(torch.from_numpy(x)).numpy(), target(x), rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize(
    "formula, kinks",
    [
        ("abs(x - 0.3)", [0.3]),
        ("min(x, 0.1) + max(x*x, 0.25)", [-0.5, 0.1, 0.5]),
        ("step(x + 0.5) + sign(x - 0.75)", [-0.5, 0.75]),
        ("sqrt(x*x)", [0.0]),  # found where autograd's f' is NaN
        ("abs(x*x) + max(x, x)", []),  # arguments that touch zero (or are zero) without a sign change
    ],
)
def test_the_kinks_of_a_formula_are_found(formula, kinks):
    found = function_target(formula, (-1.0, 1.0)).kinks
    assert len(found) == len(kinks)
    np.testing.assert_allclose(found, kinks, rtol=0, atol=1e-12)


def kinked_target(kinks) -> targets.Target:
    """The formula x on [-1, 1] with `kinks` as a preset's known kinks, looked up once."""
    target = replace(function_target("x", (-1.0, 1.0)), known_kinks=tuple(kinks))
    assert len(target.kinks) == len(kinks)
    return target


def test_points_at_any_of_many_kinks_are_not_differentiable():
    generator = np.random.default_rng(0)
    kinks = np.sort(generator.uniform(-1, 1, 300))
    x = np.concatenate([generator.uniform(-1, 1, 400), kinks[::7] + 1e-10, kinks[::11] - 3e-9, [-1.0, 1.0]])
    tolerance = 2e-9  # KINK_TOLERANCE times the domain's width, 2
    near = (np.abs(x[:, None] - kinks[None, :]) <= tolerance).any(axis=1)  # every pair compared
    assert near.sum() == len(kinks[::7])
    assert kinked_target(generator.permutation(kinks)).differentiable(x).tolist() == (~near).tolist()
    assert kinked_target([]).differentiable(x).all()


def rungefit_lines_run(call) -> int:
    """How many lines of rungefit's own code run during call()."""
    count = 0

    def trace(frame, event, arg):
        nonlocal count
        if "rungefit" in Path(frame.f_code.co_filename).parts:
            count += event == "line"
            return trace
        return None

    sys.settrace(trace)
    try:
        call()
    finally:
        sys.settrace(None)
    return count


def test_the_kink_check_costs_no_more_python_steps_for_many_kinks_and_memory_in_proportion():
    x = np.linspace(-1, 1, 20_001)
    few, many = kinked_target(np.linspace(-0.9, 0.9, 10)), kinked_target(np.linspace(-0.9, 0.9, 20_000))
    assert rungefit_lines_run(lambda: many.differentiable(x)) == rungefit_lines_run(lambda: few.differentiable(x))
    tracemalloc.start()
    try:
        many.differentiable(x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 8 * (x.size + len(many.kinks))  # a few arrays of each size, never kinks × points


def test_a_constant_formula_is_flat():
    target = function_target("2*pi", (-1.0, 1.0))
    assert (target(np.zeros(3)) == 2 * math.pi).all()
    assert (target.derivative(np.zeros(3)) == 0).all()


# ---------------------------------------------------------------- refused targets


@pytest.mark.parametrize(
    "spec, message",
    [
        ("rung", "unknown preset; choose one of runge, abs, step"),
        ("exp(-x**2", "syntax error at character"),
        ("x +* 2", "syntax error at character"),
        ("y + 1", "unknown name 'y'; a formula may use numbers, x, pi, e"),
        ("foo(x)", "unknown function 'foo'"),
        ("sin", "sin is a function"),
        ("sin(x, 2)", "sin() takes 1 argument, got 2"),
        ("x ^ 2", "write x**2"),
        ("x < 0", "a comparison"),
        ("1j * x", "1j is not allowed"),
        ("True + x", "True is not allowed"),
        ("1e400 * x", "too large for a float64"),
        ("", "empty"),
        ("log(x)", "not a real number (NaN) at x = -1"),
        ("(-1)**x", "not a real number (NaN)"),
        ("1/x", "infinite at x = 0 (1 of the 10001 points checked)"),
        ("1/(x - 0.5)", "infinite at x = 0.5"),
        ("exp(1000*x)", "infinite at x ="),
    ],
)
def test_a_bad_target_is_a_usage_error_that_says_what_and_where(spec, message):
    with pytest.raises(UsageError) as caught:
        function_target(spec, (-1.0, 1.0))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


# Formulas that would run code, or take unbounded time or memory, if the parser let them through.
HOSTILE = [
    "__import__('os').system('touch {marker}')",
    "open('{marker}', 'w')",
    "x.__class__",
    "x[0]",
    "(lambda: 1)()",
    "[x for x in (1, 2)]",
    "min(x, key=abs)",
    "max(*x)",
    "'{marker}'",
    "f'{{x}}'",
    "(y := 3)",
    "x if x else 1",
    "9**9**9**9",
    "x" * 100_000,
    "(" * 300 + "x" + ")" * 300,
    "-" * 500 + "x",
    "+".join(["x"] * 400),
    "1" + "0" * 999,
]


@pytest.mark.parametrize("formula", HOSTILE, ids=[h[:30] for h in HOSTILE])
def test_hostile_formulas_are_refused_and_run_nothing(formula, tmp_path):
    marker = tmp_path / "code-ran"
    with pytest.raises(UsageError):
        function_target(formula.format(marker=marker), (-1.0, 1.0))
    assert not marker.exists()


def test_length_is_bounded_before_parsing():
    with pytest.raises(UsageError, match="characters long"):
        parse_formula("1+" * 600 + "x")


# ---------------------------------------------------------------- any formula: only usage errors

NUMBERS = st.sampled_from(["0", "1", "2", "0.5", "3.25", "1e3", "1e-3", "10", "100", "pi", "e", "x", "x", "x"])


def formulas():
    """Random whitelisted formulas: any tree of numbers, x, pi, e, the operators and the functions,
    arities right or wrong, with random signs and parentheses."""
    unary = st.sampled_from(["-", "+", ""])

    def extend(inner):
        binary = st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "**"]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})")
        call = st.tuples(st.sampled_from(FORMULA_FUNCTIONS), st.lists(inner, min_size=1, max_size=3)).map(lambda t: f"{t[0]}({', '.join(t[1])})")
        signed = st.tuples(unary, inner).map("".join)
        return st.one_of(binary, call, signed)

    return st.recursive(NUMBERS, extend, max_leaves=12)


@settings(max_examples=100, deadline=None, database=None)
@given(formula=formulas(), domain=st.sampled_from([(-1.0, 1.0), (0.0, 3.0), (-5.0, -2.0)]))
def test_any_whitelisted_formula_either_works_everywhere_or_is_a_usage_error(formula, domain):
    try:
        target = function_target(formula, domain)
    except UsageError:
        return
    grid = check_grid(domain)
    assert np.isfinite(target(grid)).all()
    slope = target.derivative(grid)  # autograd runs, NaN only where not differentiable
    assert np.isfinite(slope[target.differentiable(grid)]).all()
    data = target.split(torch.tensor([0, 1]), 40, 0.25, dtype=torch.float64)
    assert torch.isfinite(data.y_train).all()


@settings(max_examples=100, deadline=None, database=None)
@given(text=st.text(alphabet="x()+-*/.,^ 0123456789eipabsqrtlogmn_[]'\"=:", max_size=40))
def test_any_text_is_a_target_or_a_usage_error(text):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            function_target(text, (-1.0, 1.0))
        except UsageError:
            pass
    assert caught == []  # a warning would be a stray line on stderr beside the one-line error


@pytest.mark.parametrize("text, offset", [("1if x else 2", 1), ("x + 1or 2", 5)])
def test_python_s_own_syntax_warnings_are_syntax_errors_not_a_stray_line(text, offset):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(UsageError, match=f"syntax error at character {offset}: invalid decimal literal"):
            parse_formula(text)
    assert caught == []


# ---------------------------------------------------------------- domains


@pytest.mark.parametrize(
    "text, message",
    [("1,1", "A must be below B"), ("2,1", "A must be below B"), ("nan,1", "finite"), ("0,inf", "finite"),
     ("a,b", "two numbers"), ("1", "two numbers"), ("1,2,3", "two numbers"), ("0,1e9", "within"), ("1,1.0000000000001", "too narrow")],
)
def test_bad_domains_are_usage_errors(text, message):
    with pytest.raises(UsageError, match=message):
        parse_domain(text)


def test_the_check_grid_has_the_ends_and_zero():
    grid = check_grid((-1.0, 2.0))
    assert grid[0] == -1.0 and grid[-1] == 2.0 and 0.0 in grid and len(grid) >= 10_001
    assert np.all(np.diff(grid) > 0)


def test_a_formula_finite_in_float64_but_not_in_float32_is_refused_for_a_float32_run():
    target = function_target("exp(100*x)", (-1.0, 1.0))  # e^100 ≈ 2.7e43: beyond float32
    assert torch.isfinite(target.split(torch.tensor([0]), 50, 0.3, dtype=torch.float64).y_train).all()
    with pytest.raises(UsageError, match="--dtype float64"):
        target.split(torch.tensor([0]), 50, 0.3, dtype=torch.float32)


# ---------------------------------------------------------------- data files


def write(tmp_path, text: str, name: str = "points.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_data_file_reads_with_or_without_a_header_and_with_comments(tmp_path):
    plain = read_points(write(tmp_path, "0,1\n0.5, 2\n\n1,3\n", "a.csv"))
    headed = read_points(write(tmp_path, "# measured\nx,y\n0,1\n0.5,2\n1,3\n", "b.csv"))
    spaced = read_points(write(tmp_path, "0 1\n0.5 2\n1 3\n", "c.csv"))
    for points in (plain, headed, spaced):
        assert points.x.tolist() == [0.0, 0.5, 1.0] and points.y.tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "is empty"),
        ("# nothing\n\n", "is empty"),
        ("x,y\n", "a header but no points"),
        ("1\n2\n", "line 1: one column"),
        ("1,2,3\n", "line 1: 3 columns"),
        ("0,1\n1,two\n", "line 2: 'two' is not a number"),
        ("0,1\nnan,2\n", "line 2: 'nan,2' has a NaN or infinite value"),
        ("0,1\n1,inf\n", "NaN or infinite"),
    ],
)
def test_a_bad_data_file_is_a_usage_error_naming_the_line(tmp_path, text, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        read_points(write(tmp_path, text))


def test_a_missing_or_binary_data_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot read it"):
        read_points(tmp_path / "missing.csv")
    path = tmp_path / "binary.csv"
    path.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(UsageError, match="not UTF-8"):
        read_points(path)


def data_config(**overrides) -> TrainConfig:
    return TrainConfig(**targets.settings(data=str(DATA), **overrides).fields)


def test_data_settings_record_the_file_its_sha256_and_its_range():
    config = data_config()
    assert config.data == str(DATA) and len(config.data_sha256) == 64 and config.target == ""
    assert config.domain == (0.033664, 1.995984)  # the data's range
    assert (config.points, config.test_points) == (160, 40)
    config.validate()


def test_the_test_share_is_the_same_for_every_member_and_each_member_splits_the_rest():
    config = replace(data_config(), scale="none")  # the points as they are in the file (the maps: test_maps.py)
    target = resolve(config)
    pool = set(target.pool.tolist())
    assert pool.isdisjoint(target.test_index.tolist()) and len(pool) + len(target.test_index) == 200
    stacked = target.split(torch.tensor([0, 1, 2]), config.points, config.val_fraction, dtype=torch.float64)
    alone = target.split(torch.tensor([2]), config.points, config.val_fraction, dtype=torch.float64)
    assert torch.equal(alone.x_train[0], stacked.x_train[2]) and torch.equal(alone.y_val[0], stacked.y_val[2])
    for member in range(3):
        used = torch.cat([stacked.x_train[member], stacked.x_val[member]]).numpy()
        assert sorted(used.tolist()) == sorted(target.points.x[target.pool].tolist())
    assert not torch.equal(stacked.x_train[0], stacked.x_train[1])
    x_test, y_test = target.test_set(dtype=torch.float64)
    assert set(x_test.tolist()).isdisjoint(stacked.x_train.flatten().tolist())
    # y belongs to its x: the pairs of the file, never reshuffled apart.
    pairs = dict(zip(target.points.x.tolist(), target.points.y.tolist(), strict=True))
    assert all(pairs[x] == y for x, y in zip(stacked.x_val[1].tolist(), stacked.y_val[1].tolist(), strict=True))
    assert all(pairs[x] == y for x, y in zip(x_test.tolist(), y_test.tolist(), strict=True))


def test_data_outside_an_explicit_domain_or_too_few_points_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="outside --domain"):
        data_config(domain="0,1")
    few = write(tmp_path, "\n".join(f"{i},{i}" for i in range(9)))
    with pytest.raises(UsageError, match="at least 10"):
        resolve(TrainConfig(**targets.settings(data=str(few)).fields))
    enough = write(tmp_path, "\n".join(f"{i},{i}" for i in range(10)), "enough.csv")
    resolve(TrainConfig(**targets.settings(data=str(enough)).fields, batch_size=1000))  # the batch adapts: full-batch
    same = write(tmp_path, "1,1\n1,2\n", "same.csv")
    with pytest.raises(UsageError, match="every x is 1"):
        targets.settings(data=str(same))


def test_data_and_a_target_exclude_each_other():
    with pytest.raises(UsageError, match="exclude each other"):
        targets.settings(target="abs", data=str(DATA))


def test_data_points_must_match_their_recorded_sha256(tmp_path):
    copy = write(tmp_path, DATA.read_text().replace("0.033664", "0.033665"))
    with pytest.raises(UsageError, match="does not match the SHA-256"):
        read_points(copy, expected_sha256=data_config().data_sha256)


def test_a_data_setting_without_its_sha256_is_refused():
    with pytest.raises(UsageError, match="SHA-256"):
        resolve(TrainConfig(data=str(DATA), points=160, test_points=40))
