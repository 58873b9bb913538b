"""The derived closed forms hold for every N from 1 to 8, and the proof can fail."""
import dataclasses

import pytest
import sympy as sp

from normspec.derive import proofs, symbolic as sym

FAMILY_IDS = [f.name for f in sym.FAMILIES]


@pytest.mark.parametrize("n", range(1, proofs.MAX_N + 1))
@pytest.mark.parametrize("family", sym.FAMILIES, ids=FAMILY_IDS)
def test_closed_forms_equal_brute_force(family, n):
    result = proofs.prove(family, n)
    assert "dx" in result.checked and "dx_direct" in result.checked and "dgamma" in result.checked


@pytest.mark.parametrize("family", sym.FAMILIES, ids=FAMILY_IDS)
def test_closed_forms_are_free_of_n(family):
    """The derivation never sees a group size: only the per-element and group symbols appear."""
    allowed = sym.ELEMENT_SYMBOLS | sym.GROUP_SYMBOLS
    forms = sym.derive(family)
    for expr in (forms.dx, forms.dx_direct, forms.dx_through_statistics, forms.dgamma):
        assert expr.free_symbols <= allowed, expr


def test_centered_closed_form_is_the_textbook_one():
    """dx = r (h - mean(h) - xhat mean(h xhat)) with h = gamma g."""
    h = sym.gamma * sym.g
    expected = sym.rstd * (h - sym.GroupMean(h) - sym.xhat * sym.GroupMean(h * sym.xhat))
    assert sp.expand(sym.derive(sym.CENTERED).dx - expected) == 0


def test_jacobian_split_adds_up():
    forms = sym.derive(sym.CENTERED)
    assert sp.expand(forms.dx_direct - sym.rstd * sym.gamma * sym.g) == 0
    assert sp.expand(forms.dx_direct + forms.dx_through_statistics - forms.dx) == 0


BROKEN = {
    "mean(h xhat) term dropped": lambda f: f.dx.replace(
        lambda e: isinstance(e, sym.GroupMean) and e.has(sym.xhat), lambda e: sp.Integer(0)),
    "mean(h) term dropped": lambda f: f.dx.replace(
        lambda e: isinstance(e, sym.GroupMean) and not e.has(sym.xhat), lambda e: sp.Integer(0)),
    "gamma left out": lambda f: f.dx.subs(sym.gamma, 1),
    "rstd squared": lambda f: f.dx.subs(sym.rstd, sym.rstd**2),
}


@pytest.mark.parametrize("breakage", BROKEN, ids=list(BROKEN))
def test_proof_rejects_a_wrong_closed_form(breakage):
    forms = sym.derive(sym.CENTERED)
    broken = dataclasses.replace(forms, dx=BROKEN[breakage](forms))
    with pytest.raises(AssertionError, match="dx differs"):
        proofs.prove(sym.CENTERED, 3, forms=broken)


def test_proof_rejects_a_wrong_dgamma():
    forms = sym.derive(sym.RMS)
    broken = dataclasses.replace(forms, dgamma=sym.g * sym.xhat * sym.gamma)
    with pytest.raises(AssertionError, match="dgamma differs"):
        proofs.prove(sym.RMS, 2, forms=broken)
