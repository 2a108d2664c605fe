"""Rich rendering of the two commands that study a saved network: `grad` and `eval`.

Built on render.py's consoles and tables; study.py calls render_grad and render_eval.
What comes from the user or a file is printed without markup or escaped, as in render.py.
"""

from __future__ import annotations

import math

from rich.markup import escape
from rich.table import Table

from rungefit.cli import render as report  # report.stdout at call time: a caller may swap the console
from rungefit.cli.render import fmt, print_pairs, target_note
from rungefit.cli.tables import print_table
from rungefit.targets import describe_domain


def _or_dash(value: float | None, show) -> str:
    """A figure, or "—" where there is no truth to compute it from (data)."""
    return "—" if value is None else show(value)


def _full(value: float) -> str:
    """Every digit a float64 holds, so that values agreeing to ~1e-16 visibly agree."""
    return f"{value:.16g}"


def _preview(values: list[float], count: int = 3) -> str:
    """The first few entries of a vector; a single entry in full."""
    if len(values) == 1:
        return _full(values[0])
    shown = ", ".join(f"{v:.4g}" for v in values[:count])
    return f"[{shown}{', …' if len(values) > count else ''}]"


def render_grad(doc: dict) -> None:
    """One table per --x point, the --grid maxima, and with --explain the chain factor by factor."""
    report.print_line(f"rungefit grad: {doc['source']} ({doc['layers']}){target_note(doc)}, in float64", markup=False)
    for point in doc["points"]:
        _grad_point_table(point, doc)
    if doc["grid"] is not None:
        _grad_grid_table(doc["grid"], doc["domain"])
    for chain in doc["explain"]:
        _chain_table(chain)


def _grad_point_table(point: dict, doc: dict) -> None:
    if not point["differentiable"]:
        true = "not differentiable"
    else:
        true = _or_dash(point["true"], _full) + (" (data: no true derivative)" if point["true"] is None else "")
    rows = [
        ("a^[L](x)  network output", _full(point["output"])),
        ("f(x)", _or_dash(point["target"], _full)),
        ("∇a^[L](x)  explicit chain-rule product", _full(point["explicit"])),
        ("∇a^[L](x)  autograd", _full(point["autograd"])),
        (f"∇a^[L](x)  central difference, h = {doc['fd_step']:g}", _full(point["finite_difference"])),
        ("f'(x)  true derivative", true),
        ("|product − autograd|", fmt(point["product_vs_autograd"])),
        ("|finite difference − autograd|", fmt(point["fd_vs_autograd"])),
        ("|∇a^[L] − f'|  network vs true", _or_dash(point["network_vs_true"], fmt)),
    ]
    print_pairs(f"at x = {point['x']:g}", "quantity", rows)


def _grad_grid_table(grid: dict, domain: list[float]) -> None:
    worst = grid["max_network_vs_true"]
    rows = [
        ("max |product − autograd|", fmt(grid["max_product_vs_autograd"])),
        ("max |finite difference − autograd|", fmt(grid["max_fd_vs_autograd"])),
        ("max |∇a^[L] − f'|", "— (data: no true derivative)" if worst is None else f"{fmt(worst)} at x = {grid['max_network_vs_true_at']:.4g}"),
        ("RMS |∇a^[L] − f'|", _or_dash(grid["rms_network_vs_true"], fmt)),
    ]
    if grid["not_differentiable_at"]:
        places = ", ".join(f"{x:.4g}" for x in grid["not_differentiable_at"][:4]) + (" …" if len(grid["not_differentiable_at"]) > 4 else "")
        rows.append(("f not differentiable at (left out of f')", f"x = {places}"))
    print_pairs(f"over {grid['points']} equally spaced points of {describe_domain(domain)}", "maximum over the grid", rows)


def _chain_table(chain: dict) -> None:
    factors = chain["factors"]
    shapes = " · ".join(f"{f['shape'][0]}×{f['shape'][1]}" for f in factors)
    table = Table(
        title=f"chain rule at x = {chain['x']:g}: ∇a^[L] = {' · '.join(f['name'] for f in factors)}\nshapes: {shapes} = 1×1",
        title_justify="left",
        caption=(
            "The input layer has no activation (a^[1] = x), so its factor is the identity, not σ'(x) as the "
            "formula is often written; the output layer is linear, so σ_L' = 1. W is the same for every x; "
            "the diag(σ') factors depend on it."
        ),
        caption_justify="left",
    )
    for column, justify in (("factor", "left"), ("shape", "right"), ("value at this x", "left"), ("product so far", "left")):
        table.add_column(column, justify=justify)
    for factor in factors:
        table.add_row(factor["name"], f"{factor['shape'][0]}×{factor['shape'][1]}", _factor_value(factor), _preview(factor["running"]))
    print_table(table, report.stdout)


def _factor_value(factor: dict) -> str:
    """A factor in a few characters: diagonal entries for diag(σ'), range and norm for W."""
    matrix = factor["matrix"]
    if factor["kind"] == "activation":
        return f"{factor['note']}: " + _preview([row[i] for i, row in enumerate(matrix)])
    if factor["kind"] == "weight":
        entries = [v for row in matrix for v in row]
        return f"‖W‖ = {math.sqrt(sum(v * v for v in entries)):.3g}, in [{min(entries):.3g}, {max(entries):.3g}]"
    return f"{'1' if factor['kind'] == 'output' else 'I'}: {factor['note']}"


def render_eval(doc: dict) -> None:
    """The network's scores on the test grid, the baselines beside it (if any), then the --x points."""
    network, regions = doc["scores"][0], doc["regions"]
    # A data run's columns by the names its file gives them; a function's x is x.
    x_name, y_name = doc.get("x_label", "x"), doc.get("y_label", "f(x)")
    report.print_line(f"rungefit eval: {doc['source']}{target_note(doc)}", markup=False)
    rows = [
        ("MSE", fmt(network["mse"])),
        ("RMSE", fmt(network["rmse"])),
        ("max |error|", f"{fmt(network['max_abs_error'])} at {x_name} = {network['max_abs_error_at']:.4g}"),
        (f"near the ends, {regions['ends']}: RMSE, max |error|", f"{fmt(network['ends_rmse'])}, {fmt(network['ends_max_abs_error'])}"),
        (f"in the middle, {regions['middle']}: RMSE, max |error|", f"{fmt(network['middle_rmse'])}, {fmt(network['middle_max_abs_error'])}"),
        ("parameters", str(network["parameters"])),
    ]
    if "band" in doc:
        band = doc["band"]
        inside = round(band["coverage"] * band["points"])
        rows += [
            (f"ensemble of {band['members']}: test points within ±{band['width']:g} spread", f"{100 * band['coverage']:.1f} % ({inside} of {band['points']})"),
            ("ensemble: mean spread, noise level", f"{fmt(band['mean_spread'])}, {fmt(band['noise'])}"),
        ]
    where = f"the {doc['points']} held-out test points" if doc["data"] else f"{doc['points']} equally spaced points of {describe_domain(doc['domain'])}"
    print_pairs(f"on {where}", "metric", rows)
    if len(doc["scores"]) > 1:
        _baselines_table(doc["scores"], regions, doc["data"], x_name)
    if doc["at_x"]:
        _eval_points_table(doc["at_x"], x_name, y_name)


BASELINE_CAPTIONS = {
    False: (
        "equispaced: the polynomial interpolant of degree d at d+1 equally spaced nodes; Chebyshev: the interpolant "
        "at d+1 Chebyshev points; cubic spline: through the same d+1 equispaced nodes."
    ),
    True: (
        "Chebyshev LS: the Chebyshev series of degree d closest to the member's training points in least squares; "
        "smoothing spline: SciPy's cubic smoothing spline of those points, smoothed by generalised cross-validation."
    ),
}


def _baselines_table(scores: list[dict], regions: dict, data: bool, x_name: str = "x") -> None:
    table = Table(
        title=f"the network beside classical approximants, on the same {'points' if data else 'grid'}",
        title_justify="left",
        caption=escape(
            f"ends max, middle max: max |error| over {regions['ends']} and {regions['middle']}. {BASELINE_CAPTIONS[data]} "
            "params: the numbers that fix each approximant."
        ),
        caption_justify="left",
    )
    table.add_column("approximant", no_wrap=True)
    for column in ("params", "MSE", "max |error|", escape(f"at {x_name}"), "ends max", "middle max"):
        table.add_column(column, justify="right")
    for s in scores:
        table.add_row(
            s["name"], str(s["parameters"]), fmt(s["mse"]), fmt(s["max_abs_error"]), f"{s['max_abs_error_at']:+.3f}",
            fmt(s["ends_max_abs_error"]), fmt(s["middle_max_abs_error"]),
        )
    print_table(table, report.stdout)


def _eval_points_table(points: list[dict], x_name: str = "x", y_name: str = "f(x)") -> None:
    table = Table(title=escape(f"the network at the requested {x_name}"), title_justify="left")
    for column in (x_name, "network", y_name, "error"):
        table.add_column(escape(column), justify="right")
    flag = any(p["extrapolation"] for p in points)
    if flag:
        table.add_column("")
    for p in points:
        row = [f"{p['x']:g}", f"{p['prediction']:.7g}", _or_dash(p["target"], lambda v: f"{v:.7g}"), _or_dash(p["error"], fmt)]
        table.add_row(*row, *(["extrapolation" if p["extrapolation"] else ""] if flag else []))
    print_table(table, report.stdout)
