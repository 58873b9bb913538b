"""reference: NumPy and torch reference implementations generated from the derivation.

``reference.numpy_ref`` and ``reference.torch_ref`` have the names and signatures of
``torch.nn.functional``; their mathematics is printed into ``reference/_generated``.
"""
