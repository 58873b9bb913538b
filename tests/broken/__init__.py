"""Deliberately broken normalization layers, in :mod:`tests.broken.impls`.

They exist to prove that the verification battery has teeth: each one is correct in
every respect except one realistic bug, and ``tests.broken.impls.BROKEN`` says which
kind of check should catch it (``CORRECT`` holds the bug-free controls built from the
same pieces). Nothing is imported here, so ``python -m tests.broken.impls`` runs the
self-test without importing the module twice.
"""
