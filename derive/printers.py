"""Printers from the derivation's expressions to vectorised NumPy and torch source.

One printer class, one ``_print_<Node>`` method per node type it supports; the NumPy
and torch printers differ only in their :class:`Dialect` (module name, function
table and the small runtime helpers it needs). Anything else (a Float, an unknown
function, a Piecewise) fails loudly.

Reductions are lifted into named temporaries (``mean_0 = ...``) and ``sympy.cse``
shares the rest, so generated code is a straight sequence of broadcasting statements
with no Python loop over elements. On inputs of millions of elements the cost of that
sequence is the number of passes over memory and the number of fresh full-size arrays
(each one page-faulted in anew), so the body writer (:func:`print_statements`) keeps
both low without changing what is computed:

- a reduction of a product of fields is one fused call where the dialect has one
  (NumPy: ``numpy.einsum`` sums the product without materialising it);
- a per-element statement creates one array with its first operation and applies the
  other operands in place (``dx = xhat*mean_0; dx -= t0; dx += mean_1; dx *= -rstd``)
  instead of allocating one temporary per operator;
- with ``reuse`` (code autograd does not record), arrays the body created and no longer
  reads are written again: taken over (``xhat = xc; xhat *= rstd``) or filled through
  ``out=`` (``dx = torch.mul(xhat, mean_0, out=buf0)``).

In-place updates only ever touch arrays the body itself created, never its inputs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import sympy as sp
from sympy.printing.str import StrPrinter

from normspec.derive import symbolic as sym

# Code names of the derivation's symbols.
CODE_NAMES = {
    sym.x: "x", sym.g: "grad_out", sym.gamma: "weight", sym.beta: "bias",
    sym.xc: "xc", sym.xhat: "xhat", sym.y: "y",
    sym.mu: "mean", sym.var: "var", sym.rstd: "rstd", sym.eps: "eps",
}
_TEMPORARY = re.compile(r"^(t|mean_|sum_)\d+$")
# Fields with one value per element of the input: arrays of the full working shape.
# (gamma and beta are per-element in the mathematics but arrive in the parameter shape.)
FULL_FIELDS = frozenset({sym.x, sym.g, sym.xc, sym.xhat, sym.y})

_NUMPY_RUNTIME = '''
def _is_array(value):
    return isinstance(value, numpy.ndarray)


def _sum_of_products(axes, factors):
    """(sum over axes of the product of factors, keepdims; the number of terms summed).

    The arrays among the factors (all of the working rank) broadcast together and are
    multiplied and summed in one numpy.einsum pass, without a temporary for the
    product; the other factors (Python scalars) scale the result.
    """
    arrays = list(filter(_is_array, factors))
    scale = math.prod(itertools.filterfalse(_is_array, factors))
    shape = numpy.broadcast_shapes(*map(numpy.shape, arrays))
    index = list(range(len(shape)))
    kept = sorted(set(index).difference(axes))
    total = numpy.einsum(*itertools.chain.from_iterable(zip(arrays, itertools.repeat(index))), kept)
    total = total.reshape(tuple(numpy.where(numpy.isin(index, axes), 1, shape).tolist()))
    return (total if scale == 1 else total * scale), math.prod(shape) // total.size


def _group_mean(axes, *factors):
    """mean over the group (axes) of the product of factors, keepdims."""
    total, count = _sum_of_products(axes, factors)
    return total / count


def _affine_sum(axes, *factors):
    """sum over the affine axes of the product of factors, keepdims."""
    return _sum_of_products(axes, factors)[0]
'''


@dataclass(frozen=True)
class Dialect:
    """What differs between array libraries: the module, the function table, runtime helpers."""

    module: str
    group_mean: str  # format with {arg}
    affine_sum: str
    sqrt: str
    rsqrt: str
    # Fused reductions of a product of fields, formatted with {factors} (comma-separated);
    # None: the product is materialised and reduced with group_mean / affine_sum.
    fused_group_mean: str | None = None
    fused_affine_sum: str | None = None
    # Binary operators as functions taking out= (an array written instead of a new one):
    # (operator, function) pairs; empty: results of binary operations are new arrays.
    binary: tuple[tuple[str, str], ...] = ()
    imports: tuple[str, ...] = ()  # modules the runtime helpers use
    runtime: str = ""  # helper definitions the fused forms call, printed once per module
    # The library records operations for differentiation (torch autograd): code that may
    # run under it must not take over arrays in place (print_statements' reuse).
    recorded: bool = False

    def binary_into(self, operator: str, left: str, right: str, out: str) -> str:
        """``left <operator> right`` written into the array ``out``."""
        return f"{dict(self.binary)[operator]}({left}, {right}, out={out})"


NUMPY = Dialect(
    module="numpy",
    group_mean="numpy.mean({arg}, axis=group_dims, keepdims=True)",
    affine_sum="numpy.sum({arg}, axis=affine_dims, keepdims=True)",
    sqrt="numpy.sqrt({arg})",
    rsqrt="1 / numpy.sqrt({arg})",
    fused_group_mean="_group_mean(group_dims, {factors})",
    fused_affine_sum="_affine_sum(affine_dims, {factors})",
    binary=(("+", "numpy.add"), ("-", "numpy.subtract"), ("*", "numpy.multiply")),
    imports=("itertools", "math"),
    runtime=_NUMPY_RUNTIME,
)
TORCH = Dialect(
    module="torch",
    group_mean="torch.mean({arg}, dim=group_dims, keepdim=True)",
    affine_sum="torch.sum({arg}, dim=affine_dims, keepdim=True)",
    sqrt="torch.sqrt({arg})",
    rsqrt="torch.rsqrt({arg})",
    binary=(("+", "torch.add"), ("-", "torch.sub"), ("*", "torch.mul")),
    recorded=True,
)


class UnsupportedNode(TypeError):
    pass


def _factors(expr: sp.Expr) -> list[sp.Expr]:
    """``expr`` as a list of factors, integer powers written out (xc**2 -> [xc, xc])."""
    factors = []
    for factor in sp.Mul.make_args(expr):
        base, exponent = factor.as_base_exp()
        if exponent.is_Integer and exponent > 1:
            factors.extend([base] * int(exponent))
        else:
            factors.append(factor)
    return factors


class ArrayPrinter(StrPrinter):
    """Prints one expression of the derivation as array code in ``dialect``.

    ``full`` names the symbols that are arrays of the full working shape (the fields
    and the temporaries computed from them); a reduction fuses only when one of its
    factors is such an array.
    """

    def __init__(self, dialect: Dialect, full: frozenset[sp.Symbol] = FULL_FIELDS):
        super().__init__({"order": "none"})
        self.dialect = dialect
        self.full = full

    def emptyPrinter(self, expr):  # noqa: N802 (SymPy's name)
        raise UnsupportedNode(f"no printer for {type(expr).__name__}: {expr!r}")

    def _print_Symbol(self, expr):
        if expr in CODE_NAMES:
            return CODE_NAMES[expr]
        if _TEMPORARY.match(expr.name):
            return expr.name
        raise UnsupportedNode(f"symbol {expr.name!r} has no code name")

    def _print_Pow(self, expr, rational=False):
        base, exponent = expr.args
        if exponent == sp.Rational(-1, 2):
            return self.dialect.rsqrt.format(arg=self._print(base))
        if exponent == sp.Rational(1, 2):
            return self.dialect.sqrt.format(arg=self._print(base))
        if not exponent.is_Integer:
            raise UnsupportedNode(f"power with exponent {exponent}")
        return super()._print_Pow(expr, rational)

    def _reduction(self, expr, plain: str, fused: str | None):
        arg = expr.args[0]
        if fused is None or not (arg.free_symbols & self.full):
            return plain.format(arg=self._print(arg))
        coefficient, rest = arg.as_coeff_Mul()
        call = fused.format(factors=", ".join(self._print(f) for f in _factors(rest)))
        return call if coefficient == 1 else f"({self._print(coefficient)})*{call}"

    def _print_GroupMean(self, expr):
        return self._reduction(expr, self.dialect.group_mean, self.dialect.fused_group_mean)

    def _print_AffineSum(self, expr):
        return self._reduction(expr, self.dialect.affine_sum, self.dialect.fused_affine_sum)

    def _print_Function(self, expr):
        raise UnsupportedNode(f"function {expr.func.__name__} is not in the {self.dialect.module} table")

    def _print_Float(self, expr):
        raise UnsupportedNode(f"float literal {expr} (derived expressions are exact)")


def _is_reduction(expr: sp.Expr) -> bool:
    return isinstance(expr, (sym.GroupMean, sym.AffineSum))


def straight_line(outputs: dict[str, sp.Expr]) -> list[tuple[str, sp.Expr]]:
    """Assignments computing ``outputs``: CSE, then every reduction in its own temporary."""
    names = list(outputs)
    replacements, reduced = sp.cse(
        [outputs[n] for n in names],
        symbols=sp.numbered_symbols("t"),
        optimizations="basic",
        order="none",
    )
    counters = {"mean": 0, "sum": 0}
    statements: list[tuple[str, sp.Expr]] = []

    def lift(expr: sp.Expr, *, keep_top: bool) -> sp.Expr:
        """Move nested reductions of ``expr`` into statements of their own."""

        def visit(node: sp.Expr, top: bool) -> sp.Expr:
            if not node.args:
                return node
            rebuilt = node.func(*(visit(a, False) for a in node.args))
            if _is_reduction(rebuilt) and not top:
                kind = "mean" if isinstance(rebuilt, sym.GroupMean) else "sum"
                temp = sp.Symbol(f"{kind}_{counters[kind]}")
                counters[kind] += 1
                statements.append((temp.name, rebuilt))
                return temp
            return rebuilt

        return visit(expr, keep_top)

    for temp, value in replacements:
        statements.append((temp.name, lift(value, keep_top=True)))
    for name, value in zip(names, reduced):
        statements.append((name, lift(value, keep_top=True)))
    return statements


_BY_NAME = {name: symbol for symbol, name in CODE_NAMES.items()}


class _BodyWriter:
    """Emits one kernel body (see :func:`print_statements`).

    Tracks which names hold per-element arrays (``full``), which of those arrays the
    body created itself (``owned``: the only ones ever written in place), and, with
    ``reuse``, which created arrays hold dead values (``free``: written again through
    ``out=`` instead of allocating).
    """

    def __init__(self, dialect: Dialect, statements, returns, reuse: bool, indent: str):
        self.dialect, self.reuse, self.indent = dialect, reuse, indent
        self.statements = [(name, _BY_NAME.get(name, sp.Symbol(name)), value) for name, value in statements]
        end = len(self.statements)
        self.last_use = {symbol: (end if name in returns else index)
                         for index, (name, symbol, _) in enumerate(self.statements)}
        for index, (_, _, value) in enumerate(self.statements):
            for symbol in value.free_symbols:
                if symbol in self.last_use and self.last_use[symbol] < end:
                    self.last_use[symbol] = max(self.last_use[symbol], index)
        self.full: set[sp.Symbol] = set(FULL_FIELDS)
        self.owned: set[sp.Symbol] = set()
        self.free: list[str] = []
        self.scratch = 0
        self.lines: list[str] = []

    # -- text ----------------------------------------------------------------------

    def text(self, expr: sp.Expr) -> str:
        return ArrayPrinter(self.dialect, frozenset(self.full)).doprint(expr)

    def operand_text(self, expr: sp.Expr) -> str:
        """``expr`` as an operand of a binary operator (parenthesised unless atomic)."""
        text = self.text(expr)
        atomic = expr.is_Symbol or (expr.is_Number and not expr.could_extract_minus_sign())
        power = isinstance(expr, sp.Pow) and expr.base.is_Symbol and expr.exp.is_Integer and expr.exp > 0
        return text if atomic or power else f"({text})"

    def emit(self, target: str, rhs: str) -> None:
        self.lines.append(f"{self.indent}{target} {rhs}\n")

    def is_full(self, expr: sp.Expr) -> bool:
        return not _is_reduction(expr) and bool(expr.free_symbols & self.full)

    # -- the body ------------------------------------------------------------------

    def write(self) -> str:
        for index, (name, symbol, value) in enumerate(self.statements):
            if _is_reduction(value):
                self.reduction(name, value, index)
            elif self.is_full(value) and isinstance(value, (sp.Add, sp.Mul, sp.Pow)):
                self.build(value, name, index)
                self.owned.add(symbol)
            else:
                self.emit(name, f"= {self.text(value)}")
                if self.is_full(value) and not value.is_Symbol:
                    self.owned.add(symbol)
            if self.is_full(value):
                self.full.add(symbol)
            self.release(index)
        return "".join(self.lines)

    def release(self, index: int) -> None:
        """Created arrays whose value nothing reads after statement ``index`` become free."""
        for name, symbol, _ in self.statements:
            if symbol in self.owned and self.last_use[symbol] == index:
                self.owned.discard(symbol)
                if self.reuse:
                    self.free.append(name)

    def take_free(self) -> str | None:
        """A free array to write a binary operation into (None: create a new one)."""
        return self.free.pop(0) if self.free and self.dialect.binary else None

    def reduction(self, name: str, value: sp.Expr, index: int) -> None:
        """A reduction; without a fused form, a compound argument is built in a scratch array."""
        arg = value.args[0]
        fused = self.dialect.fused_group_mean if isinstance(value, sym.GroupMean) else self.dialect.fused_affine_sum
        if not self.reuse or fused is not None or not self.is_full(arg) or arg.is_Symbol:
            self.emit(name, f"= {self.text(value)}")
            return
        template = self.dialect.group_mean if isinstance(value, sym.GroupMean) else self.dialect.affine_sum
        pair = self.binary_operands(arg)
        if self.free and self.dialect.binary and pair is not None:  # into a free array, inline
            out = self.free[0]
            left, operator, right = pair
            self.emit(name, f"= {template.format(arg=self.dialect.binary_into(operator, left, right, out))}")
            return
        scratch = self.free[0] if self.free else f"buf{self.scratch}"
        if not self.free:
            self.scratch += 1
        self.build(arg, scratch, index)
        self.emit(name, f"= {template.format(arg=scratch)}")
        self.free.append(scratch)  # its value is dead once reduced

    def binary_operands(self, expr: sp.Expr) -> tuple[str, str, str] | None:
        """(left, operator, right) when ``expr`` is one product or sum of two atoms, else None."""
        if isinstance(expr, sp.Pow) and expr.exp == 2 and expr.base.is_Symbol:
            return self.text(expr.base), "*", self.text(expr.base)
        if isinstance(expr, sp.Mul) and len(expr.args) == 2 and all(a.is_Symbol for a in expr.args):
            return self.text(expr.args[0]), "*", self.text(expr.args[1])
        return None

    def create(self, target: str, left: str, operator: str, right: str) -> None:
        """``target = left <operator> right`` as a new array, or into a free one."""
        out = self.take_free()
        if out is None:
            spaced = operator if operator == "*" else f" {operator} "
            self.emit(target, f"= {left}{spaced}{right}")
        else:
            self.emit(target, f"= {self.dialect.binary_into(operator, left, right, out)}")

    def build(self, expr: sp.Expr, target: str, index: int) -> None:
        """Emit statements leaving ``expr`` (per element) in a new array named ``target``.

        The operands of a sum or product are the per-element ones and at most two
        combined small ones (the group constants together, the parameters together:
        combining a parameter with a group constant could itself be a full-size array).
        The array is created by building one compound per-element operand into it, by
        taking over a created array that nothing reads afterwards (``reuse``), or by one
        binary operation (into a free array when there is one); the other operands
        are then applied in place.
        """
        if isinstance(expr, sp.Pow) and expr.exp == 2 and self.is_full(expr.base) and expr.base.is_Symbol:
            operand = self.text(expr.base)
            self.create(target, operand, "*", operand)
            return
        if not isinstance(expr, (sp.Add, sp.Mul)):
            self.emit(target, f"= {self.text(expr)}")
            return
        is_add = isinstance(expr, sp.Add)
        full = [a for a in expr.args if self.is_full(a)]
        small = [a for a in expr.args if not self.is_full(a)]
        groups = [g for g in ([a for a in small if not sym.is_group_constant(a)],
                              [a for a in small if sym.is_group_constant(a)]) if g]
        operands = [self.signed(a, is_add) for a in full] + [self.signed(expr.func(*g), is_add) for g in groups]
        base = None
        for operand in operands[:len(full)]:  # take over an array that nothing reads afterwards
            arg, negated = operand
            if (self.reuse and not negated and arg.is_Symbol and arg in self.owned
                    and self.last_use[arg] == index):
                self.owned.discard(arg)
                self.emit(target, f"= {self.text(arg)}")
                base = operand
                break
        if base is None:
            for operand in operands[:len(full)]:  # build a compound operand in place
                arg, negated = operand
                if not negated and isinstance(arg, (sp.Add, sp.Mul)):
                    self.build(arg, target, index)
                    base = operand
                    break
        if base is None:  # one binary operation creates the array
            first = next((o for o in operands[:len(full)] if not o[1]), operands[0])
            rest = [o for o in operands if o is not first]
            second = rest.pop(0)
            operator = ("-" if second[1] else "+") if is_add else "*"
            if first[1]:
                self.emit(target, f"= -{self.operand_text(first[0])} {operator} {self.operand_text(second[0])}")
            else:
                self.create(target, self.operand_text(first[0]), operator, self.operand_text(second[0]))
        else:
            rest = [o for o in operands if o is not base]
        for arg, negated in rest:
            operator = ("-" if negated else "+") if is_add else "*"
            self.emit(target, f"{operator}= {self.text(arg)}")

    @staticmethod
    def signed(arg: sp.Expr, is_add: bool) -> tuple[sp.Expr, bool]:
        """(magnitude, subtracted): an addend -t0 is t0 subtracted."""
        if is_add and arg.could_extract_minus_sign():
            return -arg, True
        return arg, False


def print_statements(statements: list[tuple[str, sp.Expr]], dialect: Dialect, indent: str = "    ", *,
                     returns: tuple[str, ...] = (), reuse: bool = False) -> str:
    """The body computing ``statements`` in order; ``returns`` are the names it returns.

    A per-element statement creates one array with its first operation and applies
    the others in place; in-place updates only touch arrays the body created, never
    its inputs. With ``reuse`` (code autograd does not record: torch saves operands
    of products for its backward and refuses ones overwritten later) the body also
    writes into arrays it created whose values are dead: a statement takes over such
    an array (``xhat = xc; xhat *= rstd``) or creates its result in one through
    ``out=``, and a reduction without a fused form builds its argument in one
    (``buf0 = t0*xhat``, later ``dx = torch.mul(xhat, mean_0, out=buf0)``).
    """
    return _BodyWriter(dialect, statements, returns, reuse, indent).write()
