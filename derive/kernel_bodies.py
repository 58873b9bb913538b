"""The kernel bodies: the derivation's expressions as a straight line of named statements.

Between SymPy and the text (``normspec.derive.printers`` prints one expression): the
spec's named subexpressions and CSE turn the closed forms into statements
(:func:`straight_line`), renamings are dropped and values read once are written into
their one use (:func:`without_aliases`, :func:`inline`), and :func:`print_statements`
writes the body, finishing per-element arrays in place where autograd does not record
(see the printers module docstring for the register this aims at).
"""
from __future__ import annotations

import re

import sympy as sp

from normspec.derive import symbolic as sym
from normspec.derive.printers import (CODE_NAMES, FORMULA, FULL_FIELDS, NAMED_SUBEXPRESSIONS, PARAMETERS, ArrayPrinter,
                                      Dialect, UnsupportedNode, _is_reduction, name_subexpressions,
                                      temporary_name)


def straight_line(outputs: dict[str, sp.Expr]) -> list[tuple[str, sp.Expr]]:
    """Assignments computing ``outputs``: the spec's named subexpressions, CSE, then every
    nested reduction in its own temporary, each temporary named by :func:`temporary_name`."""
    names = list(outputs)
    exprs = [name_subexpressions(outputs[n]) for n in names]
    statements: list[tuple[str, sp.Expr]] = [(s.name, d) for s, d in NAMED_SUBEXPRESSIONS
                                             if any(e.has(s) for e in exprs)]
    replacements, reduced = sp.cse(exprs, symbols=sp.numbered_symbols("_cse"), optimizations="basic",
                                   order="none")
    taken = {name: None for name in (*CODE_NAMES.values(), *names)}
    taken.update({name: value for name, value in statements})
    defined: dict[sp.Expr, sp.Symbol] = {}

    def temporary(value: sp.Expr) -> sp.Symbol:
        if value in defined:
            return defined[value]
        name = temporary_name(value)
        if name in taken:
            raise UnsupportedNode(f"temporary {name!r} for {value} clashes with {taken[name] or 'a code name'}")
        taken[name] = value
        symbol = defined[value] = sp.Symbol(name)
        statements.append((name, value))
        return symbol

    def lift(node: sp.Expr, top: bool = True) -> sp.Expr:
        """``node`` with its nested reductions moved into temporaries of their own."""
        if not node.args:
            return node
        rebuilt = node.func(*(lift(a, False) for a in node.args))
        return temporary(rebuilt) if _is_reduction(rebuilt) and not top else rebuilt

    def add(name: str, value: sp.Expr) -> None:
        """Append ``name = value`` after the temporaries its lift creates, those in the order
        the statement mentions them (as it reads) unless one is computed from another."""
        start = len(statements)
        value = lift(value)
        lifted = statements[start:]
        if not any(t.has(sp.Symbol(n)) for n, _ in lifted for _, t in lifted):
            known = frozenset(sp.Symbol(n) for n, _ in statements)
            text = ArrayPrinter(FORMULA, FULL_FIELDS | known, known).doprint(value)
            position = {n: re.search(rf"\b{n}\b", text).start() for n, _ in lifted}
            statements[start:] = sorted(lifted, key=lambda s: position[s[0]])
        statements.append((name, value))

    renamed: dict[sp.Symbol, sp.Symbol] = {}
    for cse_symbol, value in replacements:
        value = lift(value.xreplace(renamed))
        renamed[cse_symbol] = value if value.is_Symbol else temporary(value)
    for name, value in zip(names, reduced):
        add(name, value.xreplace(renamed))
    return statements


_BY_NAME = {name: symbol for symbol, name in CODE_NAMES.items()}
_BY_NAME.update({symbol.name: symbol for symbol, _ in NAMED_SUBEXPRESSIONS})


def _symbol(name: str) -> sp.Symbol:
    """The symbol a statement named ``name`` defines."""
    return _BY_NAME.get(name) or sp.Symbol(name)


def without_aliases(statements: list[tuple[str, sp.Expr]], returns: tuple[str, ...] = ()
                    ) -> list[tuple[str, sp.Expr]]:
    """``statements`` without the ones that only rename a value (rms: ``xc = x``): later
    statements read the value itself, so every array keeps one name."""
    aliases: dict[sp.Symbol, sp.Expr] = {}
    kept = []
    for name, value in statements:
        value = value.xreplace(aliases)
        if value.is_Symbol:
            if name in returns:
                raise UnsupportedNode(f"returned value {name!r} is only another name for {value}")
            aliases[_symbol(name)] = value
            continue
        kept.append((name, value))
    return kept


def inline(statements: list[tuple[str, sp.Expr]], returns: tuple[str, ...] = ()) -> list[tuple[str, sp.Expr]]:
    """``statements`` without renamings (:func:`without_aliases`) and with every per-element
    value that is not returned and is read once, by a per-element statement, written into
    that statement (``xhat = xc * rstd; y = weight * xhat + bias`` -> ``y = weight * xc *
    rstd + bias``): an array is made only for a value that is read more than once."""
    statements = without_aliases(statements, returns)
    full = set(FULL_FIELDS)
    per_element = {}
    for name, value in statements:
        per_element[name] = not _is_reduction(value) and bool(value.free_symbols & full)
        if per_element[name]:
            full.add(_symbol(name))

    def single_use(index: int) -> int | None:
        name, value = statements[index]
        symbol = _symbol(name)
        if name in returns or not per_element[name]:
            return None
        users = [j for j in range(index + 1, len(statements)) if symbol in statements[j][1].free_symbols]
        if len(users) != 1 or _is_reduction(statements[users[0]][1]):
            return None
        user = statements[users[0]][1]
        powers = [p for p in user.atoms(sp.Pow) if p.base.has(symbol)]
        return users[0] if user.count(symbol) == 1 and not powers else None

    index = len(statements) - 1
    while index >= 0:
        user = single_use(index)
        if user is not None:
            name, value = statements.pop(index)
            user -= 1
            statements[user] = (statements[user][0],
                                statements[user][1].xreplace({_symbol(name): value}))
        index -= 1
    return statements


# One line of a body: ``target <op> value`` with op "=" (a new array) or "+=", "-=", "*=".
Line = tuple[str, str, sp.Expr]


def _in_place(printer: ArrayPrinter, name: str, value: sp.Expr) -> list[Line] | None:
    """``name = value`` as a new array made by one operation, then updated in place by the
    others in the formula's order (``dx = h - mean_h; dx -= xhat * mean_h_xhat; dx *= rstd``);
    None when ``value`` is one operation (or not per-element)."""
    def is_full(expr: sp.Expr) -> bool:
        return not _is_reduction(expr) and bool(expr.free_symbols & printer.full)

    def made(expr: sp.Expr) -> list[Line]:
        return _in_place(printer, name, expr) or [(name, "=", expr)]

    if isinstance(value, sp.Add):
        terms = printer.ordered_terms(value)
        compound = [t for t in terms if is_full(t) and isinstance(t, sp.Mul)
                    and any(isinstance(f, sp.Add) for f in t.args)]
        if len(terms) == 2 and terms[0].is_Atom and len(compound) == 1:
            # an array plus a formula (the residual's grad_residual_out + rstd * (h - ...)): the
            # formula in place first, then the array added to it
            negative = printer.is_negative(terms[0])
            return made(compound[0]) + [(name, "-=" if negative else "+=", -terms[0] if negative else terms[0])]
        first_full = next((i for i, t in enumerate(terms) if is_full(t)), None)
        if first_full is None:
            return None
        # the first operation: the first term when it is one itself, else the terms up to the
        # first per-element one (at least two)
        count = 1 if first_full == 0 and not terms[0].is_Atom else max(first_full, 1) + 1
        if count >= len(terms) and count > 1:
            return None
        lines = made(sp.Add(*terms[:count]))
        for term in terms[count:]:
            negative = printer.is_negative(term)
            lines.append((name, "-=" if negative else "+=", -term if negative else term))
        return lines
    if isinstance(value, sp.Mul):
        coefficient, factors = printer.ordered_product(value)
        sums = [f for f in factors if isinstance(f, sp.Add)]
        if len(sums) == 1 and is_full(sums[0]):
            lines, rest = made(sums[0]), [f for f in factors if f is not sums[0]]
        else:
            # the first operation: a per-element factor times the next one, or times the group
            # constants (xc * rstd: the normalized value); the parameters follow
            fields = [f for f in factors if is_full(f)]
            constants = [f for f in factors if f not in PARAMETERS and not is_full(f)]
            if not fields:
                return None
            if len(fields) > 1:
                first = fields[:2]
            else:
                first = [*fields, coefficient, *constants] if coefficient != 1 or constants else factors
            if sp.Mul(*first) == value:
                return None
            lines = [(name, "=", sp.Mul(*first))]
            rest = [f for f in factors if not any(f is g for g in first)]
            coefficient = 1 if coefficient in first else coefficient
        # the other factors in place: the group constants together, the parameters together
        # (a parameter times a group constant can be as large as the array itself)
        groups = [*([f] for f in rest if is_full(f)),
                  [coefficient, *(f for f in rest if f not in PARAMETERS and not is_full(f))],
                  [f for f in rest if f in PARAMETERS]]
        return lines + [(name, "*=", sp.Mul(*group)) for group in groups if group and sp.Mul(*group) != 1]
    return None


def _allocates(line: Line, full: set[sp.Symbol], dialect: Dialect) -> bool:
    """Whether running ``line`` makes a per-element array (its result or a temporary)."""
    def makes(expr: sp.Expr) -> bool:
        if expr.is_Atom:
            return False
        if _is_reduction(expr):
            fused = dialect.fused_group_mean if isinstance(expr, sym.GroupMean) else dialect.fused_affine_sum
            arg = expr.args[0]
            if fused is not None and arg.free_symbols & full:
                return False
            return makes(arg) or (not arg.is_Atom and bool(arg.free_symbols & full))
        if isinstance(expr, sp.Pow) and expr.exp.is_Integer:
            return bool(expr.base.free_symbols & full) or makes(expr.base)
        operands = [a for a in expr.args if not a.is_Number]
        return any(makes(a) for a in operands) or any(
            not _is_reduction(a) and a.free_symbols & full for a in operands)

    _, op, value = line
    return makes(value) if op != "=" else makes(value) or (value.is_Atom and value in full)


def _free_after_last_use(lines: list[Line], arrays: list[str], full: set[sp.Symbol],
                         dialect: Dialect) -> list[Line | str]:
    """``lines`` with ``del name`` after the line that last reads each of ``arrays`` (per-element
    arrays the body made and does not return) when a later line makes a per-element array:
    that array then takes the memory over instead of faulting in fresh pages."""
    reads = [value.free_symbols | ({_symbol(target)} if op != "=" else set()) for target, op, value in lines]
    last = {name: max(i for i, r in enumerate(reads) if _symbol(name) in r) for name in arrays}
    out: list[Line | str] = []
    for index, line in enumerate(lines):
        out.append(line)
        dead = [name for name in arrays if last[name] == index]
        if dead and any(_allocates(later, full, dialect) for later in lines[index + 1:]):
            out.append(f"del {', '.join(dead)}")
    return out


def print_statements(statements: list[tuple[str, sp.Expr]], dialect: Dialect, indent: str = "    ", *,
                     returns: tuple[str, ...] = (), in_place: bool = False) -> str:
    """The body computing ``statements`` in order; ``returns`` are the names it returns.

    One statement per name, creating a new array under that name; renaming statements
    and values read only once are folded into their use (:func:`inline`). A statement is
    one line ``name = <expression>``, or with ``in_place`` (code autograd does not record)
    the array is made by the first operation and finished in place by the others
    (``dx = h - mean_h; dx -= xhat * mean_h_xhat; dx *= rstd``: neither library elides
    the temporaries of an expression reliably), and a per-element array is freed
    (``del``) after its last use. Only arrays the body created are ever written, never
    its inputs.
    """
    full = set(FULL_FIELDS)
    temporaries: set[sp.Symbol] = set()
    lines: list[tuple[Line, ArrayPrinter]] = []
    arrays = []
    for name, value in inline(statements, returns):
        symbol = _symbol(name)
        printer = ArrayPrinter(dialect, frozenset(full), frozenset(temporaries))
        lines += [(line, printer) for line in (in_place and _in_place(printer, name, value)) or [(name, "=", value)]]
        if not _is_reduction(value) and value.free_symbols & full:
            full.add(symbol)
            if name not in returns:
                arrays.append(name)
        if symbol not in CODE_NAMES:
            temporaries.add(symbol)
    printers = {line: printer for line, printer in lines}
    body = [line for line, _ in lines]
    if in_place:
        body = _free_after_last_use(body, arrays, full, dialect)
    text = [line if isinstance(line, str) else f"{line[0]} {line[1]} {printers[line].doprint(line[2])}"
            for line in body]
    return "".join(f"{indent}{line}\n" for line in text)
