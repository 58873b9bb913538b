"""Cases are what they say: a 'contiguous' case hands the implementation a C-contiguous x, the
other memory layouts are what their names say, whatever the variant's grouping."""
import pytest
import torch

from normspec.derive.variants import NAMES
from normspec.verify.cases.case import Case


@pytest.mark.parametrize("variant", NAMES)
def test_memory_layouts_are_what_they_say(variant):
    case = Case(variant, (3, 4, 5, 2), num_groups=2)
    x = case.arrays()["x"]
    assert x.flags["C_CONTIGUOUS"]
    assert case.torch_tensor(x, memory=True).is_contiguous()
    strided = Case(variant, (3, 4, 5, 2), num_groups=2, memory="noncontiguous")
    assert not strided.torch_tensor(x, memory=True).is_contiguous()
    channels_last = Case(variant, (3, 4, 5, 2), num_groups=2, memory="channels_last")
    assert channels_last.torch_tensor(x, memory=True).is_contiguous(memory_format=torch.channels_last)
