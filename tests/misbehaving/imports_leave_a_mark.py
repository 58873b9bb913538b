"""Importing this module writes a marker file: the test that ``normspec repro`` never imports the
implementation a reproduction file names checks that the marker never appears."""
import os

_marker = os.environ.get("NORMSPEC_TEST_IMPORT_MARKER")
if _marker:
    with open(_marker, "w") as file:
        file.write("imported\n")


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    import torch.nn.functional as F

    return F.layer_norm(x, normalized_shape, weight, bias, eps) * 1.01
