"""Verdicts are deterministic: the same check gives the same examples and the same report in
another process after other imports (Hypothesis would otherwise mix literals collected from
whichever local modules are loaded into its draws)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RUN = """
import json, sys
{imports}
import normspec
report = normspec.check("torch.nn.functional:layer_norm", "layer_norm", dtypes=["bfloat16", "float32"],
                        checks=["forward", "backward"], max_examples=40)
payload = report.to_dict()
for key in ("seconds",):
    payload.pop(key)
for check in payload["checks"]:
    check.pop("seconds")
    check.pop("reproduction_file")  # a new temporary folder each run
    check["reason"] = check["reason"].split(" (observed")[0]
print("JSON" + json.dumps(payload, sort_keys=True))
"""


def _report(imports: str, *, path: Path = ROOT) -> dict:
    code = f"import sys; sys.path.insert(0, {str(path)!r})\n" + RUN.format(imports=imports)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith("JSON")), None)
    assert line is not None, run.stdout[-2000:] + run.stderr[-2000:]
    return json.loads(line[4:])


def test_same_report_whatever_was_imported_before(tmp_path):
    """A user's module full of literals (integers in the seed range) imported first changes nothing."""
    literals = ", ".join(str(7 + 331 * k) for k in range(150))
    (tmp_path / "user_constants.py").write_text(f"SEEDS = [{literals}]\nSCALES = [{', '.join(f'{k}.25' for k in range(60))}]\n")
    first = _report("")
    after = _report("import user_constants, tests.bug_zoo, tests.broken.impls, normspec.docs", path=tmp_path)
    assert after == first
    assert sum(c["examples"] for c in first["checks"]) > 0
