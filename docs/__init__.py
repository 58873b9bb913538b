"""normspec.docs: the generator of the spec documentation (docs/spec, docs/site), printed from the derivation.

By role: ``mathematics`` (what the statements say, read off ``normspec.derive``),
``prose`` (the hand-written text: ``templates/*.md``, ``statements.toml``,
``conventions.toml``, ``bugs.toml``, ``style.css``), ``statements`` (formulas with their prose
and checks), ``bugs`` (the typical bugs, with what each computes), ``calling_conventions``
(aten's saved statistics, the backward from the output, the precision contracts and the
parameter dtypes, read from their records), ``figures`` (matplotlib),
``battery_data`` (docs/verification.json), ``pages`` (the Markdown), ``site`` (the HTML) and
``generate`` (every file, and ``run``, which ``normspec docs`` calls). Nothing imports this package but the CLI.
"""
from normspec.docs.generate import generated_files, run

__all__ = ["generated_files", "run"]
