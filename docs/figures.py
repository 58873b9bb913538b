"""The spec's pictures (matplotlib, Agg), deterministic to the byte.

Each figure is drawn into a fresh :class:`~matplotlib.figure.Figure` on its own canvas
(no pyplot state) and saved without the Software metadata, so the same inputs give the
same PNG bytes in any process: the Jacobian of each family for one seeded group, the
output's second moment against var/eps, and the battery's results
(``docs/verification.json``).
"""
from __future__ import annotations

import io
import math

import matplotlib
import numpy as np
import sympy as sp
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from normspec.derive import symbolic as sym, variants
from normspec.derive.dtypes import DTYPES
from normspec.derive.latex import latex
from normspec.docs import battery_data, mathematics as m

JACOBIAN_N = 6  # the group size of the Jacobian pictures
FIGURE_DPI = 110
RC = {"svg.hashsalt": "normspec", "font.family": "DejaVu Sans", "font.size": 10, "axes.titlesize": 10}


def figure_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI, metadata={"Software": None})
    return buffer.getvalue()


def new_figure(width: float, height: float) -> Figure:
    matplotlib.rcParams.update(RC)
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


# --- the Jacobian ----------------------------------------------------------------------------------

def evaluate_program(family: sym.Family, x: np.ndarray, eps: float) -> dict[sp.Symbol, np.ndarray | float]:
    """The forward program on numbers: every node evaluated from its SymPy expression."""
    values: dict[sp.Symbol, np.ndarray | float] = {sym.x: x, sym.eps: eps, sym.w: 1.0, sym.c: 0.0, sym.beta: 0.0}
    for node in family.program():
        free = sorted(node.expr.free_symbols, key=str)
        value = sp.lambdify(free, node.expr, "numpy")(*(values[s] for s in free))
        values[node.target] = float(np.mean(value)) if node.reduced else value
    return values


def jacobian_matrices(family: sym.Family, x: np.ndarray, eps: float) -> dict[str, np.ndarray]:
    """The direct part, the batch part and their sum as N x N matrices, d xhat_i / d x_j."""
    values = evaluate_program(family, x, eps)
    xhat, n = np.asarray(values[sym.xhat], dtype=float), len(x)
    jac = m.jacobian(family)
    delta = sp.Symbol("delta")
    args = [m.element(sym.xhat, m.I), m.element(sym.xhat, m.J), sym.rstd, m.N, delta]
    out = {}
    for name, entry in (("direct", jac.direct), ("batch", jac.batch), ("sum", jac.total)):
        f = sp.lambdify(args, entry.xreplace({m.DELTA: delta}), "numpy")
        matrix = f(xhat[:, None], xhat[None, :], values[sym.rstd], n, np.eye(n))
        out[name] = np.broadcast_to(np.asarray(matrix, dtype=float), (n, n)).copy()
    return out


def jacobian_sample(family: sym.Family) -> tuple[np.ndarray, float]:
    """The group of the Jacobian pictures: N = 6 seeded values with a mean offset, eps = 1e-5."""
    x = np.round(np.random.default_rng(6).standard_normal(JACOBIAN_N) * 1.5 + 0.5, 2)
    return x, 1e-5


def jacobian_figure(family: sym.Family) -> bytes:
    x, eps = jacobian_sample(family)
    matrices = jacobian_matrices(family, x, eps)
    jac = m.jacobian(family)
    fig = new_figure(11.5, 4.4)
    panels = fig.subplots(1, 3)
    limit = float(max(np.max(np.abs(a)) for a in matrices.values()))
    titles = {"direct": ("direct path (statistics held)", jac.direct),
              "batch": ("through the batch statistics", jac.batch),
              "sum": ("sum: the Jacobian", jac.total)}
    for ax, (name, matrix) in zip(panels, matrices.items()):
        image = ax.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit)
        words, entry = titles[name]
        ax.set_title(f"{words}\n${latex(entry)}$")
        ax.set_xlabel("j")
        ax.set_ylabel("i")
        ax.set_xticks(range(JACOBIAN_N), [str(k + 1) for k in range(JACOBIAN_N)])
        ax.set_yticks(range(JACOBIAN_N), [str(k + 1) for k in range(JACOBIAN_N)])
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if abs(value) > 0.6 * limit else "black")
    fig.colorbar(image, ax=list(panels), shrink=0.8, label=r"$\partial \hat{x}_i / \partial x_j$")
    fig.suptitle(f"{family.name} family: Jacobian of xhat for one group of N = {JACOBIAN_N}, "
                 f"x = {', '.join(f'{v:g}' for v in x)}, eps = {eps:g}", fontsize=10)
    return figure_bytes(fig)


# --- the second moment ------------------------------------------------------------------------------

def second_moment_figure() -> bytes:
    _, written_out = m.second_moment(sym.CENTERED)
    f = sp.lambdify([sym.var, sym.eps], written_out, "numpy")
    ratio = np.logspace(-3, 4, 400)
    fig = new_figure(6.4, 3.6)
    ax = fig.subplots()
    ax.semilogx(ratio, f(ratio, 1.0), color="tab:blue", label=f"${sp.latex(written_out)}$ (derived)")
    ax.axhline(1.0, color="gray", linestyle="--", linewidth=1, label="1 (what notes often claim)")
    for r in (1.0, 10.0):
        ax.plot([r], [f(r, 1.0)], "o", color="tab:red")
        ax.annotate(f"var = {r:g} eps: {f(r, 1.0):.3f}", (r, f(r, 1.0)), textcoords="offset points",
                    xytext=(8, -12), fontsize=8)
    ax.set_xlabel("variance of the group / eps")
    ax.set_ylabel("mean(xhat^2), the output's second moment")
    ax.set_ylim(0, 1.08)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("The output variance is var/(var + eps), not 1")
    return figure_bytes(fig)


# --- the battery -------------------------------------------------------------------------------------

def _status_note(counts: dict[str, int]) -> str:
    notes = [f"{counts[s]} {label}" for s, label in (("failed", "FAIL"), ("expected failure", "xfail"))
             if counts.get(s)]
    return "\n".join(notes)


def battery_figure(records: list[dict]) -> bytes:
    """One row per metric (battery_data.METRICS), one panel per implementation: variant x dtype."""
    summary = battery_data.battery_summary(records)
    implementations = sorted({k[0] for k in summary})
    shown = [v for v in variants.NAMES if any(k[1] == v for k in summary)]
    dtypes = [d for d in DTYPES if any(k[2] == d for k in summary)]
    metrics = [(key, label) for key, label in battery_data.METRICS
               if any(c[key] is not None for c in summary.values())]
    fig = new_figure(3.6 * len(implementations) + 1.6, 3.4 * len(metrics) + 0.4)
    grid_axes = np.array(fig.subplots(len(metrics), len(implementations), squeeze=False))
    for row, (key, label) in zip(grid_axes, metrics):
        values = [c[key] for c in summary.values() if c[key] is not None and 0 < c[key] < math.inf]
        low, high = (min(values), max(values)) if values else (1e-3, 1.0)
        high = max(high, low * 10)
        image = None
        for ax, impl in zip(row, implementations):
            grid = np.full((len(shown), len(dtypes)), np.nan)
            for a, v in enumerate(shown):
                for b, d in enumerate(dtypes):
                    cell = summary.get((impl, v, d))
                    if cell is None:
                        continue
                    value = cell[key]
                    if value is not None and math.isfinite(value):
                        grid[a, b] = min(max(value, low), high)
                    text = "—" if value is None else f"{value:.2g}"
                    note = _status_note(cell["counts"])
                    ax.text(b, a, text + ("\n" + note if note else ""), ha="center", va="center", fontsize=7)
            image = ax.imshow(grid, cmap="viridis", norm=LogNorm(vmin=low, vmax=high), alpha=0.8)
            ax.set_title(impl)
            ax.set_xticks(range(len(dtypes)), dtypes, rotation=30)
            ax.set_yticks(range(len(shown)), shown)
        fig.colorbar(image, ax=list(row), shrink=0.85, label=label)
    fig.suptitle("The battery per variant and dtype (docs/verification.json); a blank cell: no check ran",
                 fontsize=10)
    return figure_bytes(fig)
