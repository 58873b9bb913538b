"""Running-statistics bugs (batch_norm): output and gradients are exact, the state the
layer carries to eval mode is not. Only the running-statistics checks see them."""
from __future__ import annotations

import torch

from tests.broken.impls import (
    _batch_norm_from,
    _compute_dtype,
    _two_pass,
    _update_running,
    batch_norm_biased_running_var,
    batch_norm_momentum_inverted,
)

__all__ = ["batch_norm_biased_running_var", "batch_norm_momentum_inverted", "batch_norm_running_not_updated",
           "batch_norm_running_updated_in_eval"]


def batch_norm_running_not_updated(x, running_mean, running_var, weight=None, bias=None, training=False,
                                   momentum=0.1, eps=1e-5):
    """Bug class: running statistics never updated -- training normalizes with the batch
    statistics but never writes them into running_mean / running_var (the update was left
    to a caller that does not exist), so eval later uses the initial values.

    Output and gradients are exact in training and eval. Caught only by a running-statistics
    check after a training step with momentum != 0 (momentum = 0 coincides).
    """
    def no_update(running_mean, running_var, mean, var, n, momentum):
        return None
    return _batch_norm_from(x, running_mean, running_var, weight, bias, training, momentum, eps, update=no_update)


def batch_norm_running_updated_in_eval(x, running_mean, running_var, weight=None, bias=None, training=False,
                                       momentum=0.1, eps=1e-5):
    """Bug class: running statistics updated in eval -- the update is not guarded by
    ``training``: eval normalizes with the running statistics as given (exact output) but
    then also folds the eval batch's statistics into them.

    Output, gradients and the training-mode update are exact. Caught only by a check that
    the running statistics are unchanged after an eval call (momentum != 0).
    """
    if training or running_mean is None or running_var is None:
        return _batch_norm_from(x, running_mean, running_var, weight, bias, training, momentum, eps)
    y = _batch_norm_from(x, running_mean.clone(), running_var.clone(), weight, bias, training, momentum, eps)
    with torch.no_grad():
        xf = x.to(_compute_dtype(x))
        mu, var = _two_pass(xf, (0, *range(2, x.dim())))
        n = max(xf.numel() // xf.shape[1], 2)  # eval accepts one value per channel (var = 0 then)
        _update_running(running_mean, running_var, mu.flatten(), var.flatten(), n, momentum)
    return y
