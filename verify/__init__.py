"""normspec.verify: the battery of checks, and the harness that points it at any implementation.

Grouped by role: ``implementations`` (the implementation under test: loading, probing,
isolation, the built-in ones), ``cases`` (cases, value kinds, strategies), ``truth`` (the
plain definition, the mpmath oracle, the tolerance policy), ``checks`` (oracles,
invariants, identities), ``running`` (the battery, profiles, deviations and expected
failures), ``reporting`` (tables, JSON, Markdown, reproduction files); ``api`` and
``pytest_plugin`` are the harness. The public entry point is ``normspec.check``.
"""
