"""The battery as pytest items: ``pytest --pyargs verify --normspec-impl package.module:function``.

Collected only when pytest is pointed at the verify package; see verify/pytest_plugin.py.
"""
import pytest


def test_normspec(normspec_command_line_check):
    if normspec_command_line_check is None:
        pytest.skip("no implementation given: pass --normspec-impl package.module:function")
    normspec_command_line_check.run()
