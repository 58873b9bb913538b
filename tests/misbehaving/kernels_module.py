"""A module of kernels named after variants, as `--impl tests.misbehaving.kernels_module` takes it:
group_norm and rms_norm are torch's own, layer_norm puts eps outside the square root. Only the
cross-variant identities (and layer_norm's own checks) can tell which one is wrong."""
import torch
import torch.nn.functional as F

group_norm = F.group_norm
rms_norm = F.rms_norm


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims = tuple(range(-len(normalized_shape), 0))
    mean = x.mean(dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dims, keepdim=True)
    y = (x - mean) / (torch.sqrt(var) + eps)  # bug: eps outside the square root
    if weight is not None:
        y = y * weight
    return y + bias if bias is not None else y
