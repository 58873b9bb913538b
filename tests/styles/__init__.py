"""Correct normalization layers written in four styles other than normspec's own references.

Each module provides the variants with their ``torch.nn.functional`` signatures and defaults,
written from the mathematics alone (no normspec code), so the battery can be measured for
false alarms on implementations it was not built around:

- ``plain_autograd``: plain torch ops (two-pass mean and variance), differentiated by autograd;
- ``closed_form``: one ``torch.autograd.Function`` per variant, backward a hand-written closed form;
- ``reshape_based``: every variant reduced to a reshape onto (groups, elements), autograd;
- ``numpy_backward``: NumPy forward and hand-written NumPy ``<variant>_backward`` functions.

16-bit inputs are computed in float32 and the results cast back, as torch does.
``tests/test_verify_styles.py`` checks them; ``benchmarks/false_positives.py`` measures them.
"""
