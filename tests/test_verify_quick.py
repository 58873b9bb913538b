"""The smoke comparison of `normspec all`: both references against torch.nn.functional."""
from normspec.verify import quick
from normspec.cli import QUICK_TOLERANCE
from normspec.derive.variants import NAMES as VARIANTS


def test_quick_comparison_covers_every_variant_and_passes():
    results = quick.run_all()
    assert {r.variant for r in results} == set(VARIANTS)
    assert {r.implementation for r in results} == {"numpy_ref", "torch_ref"}
    for r in results:
        assert r.forward_error <= QUICK_TOLERANCE and r.backward_error <= QUICK_TOLERANCE, r
