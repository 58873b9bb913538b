"""The spec docs are fresh, render (every formula parses, the HTML is MathML), have every
section, state the derivation hash, and their Jacobian is the derivative of the forward;
the generator keeps its prose and style in files, not in Python strings."""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp

from normspec import docs
from normspec.derive import codegen, latex, outputs, symbolic as sym, variants
from normspec.docs import battery_data, figures, generate, mathematics, pages, prose, statements

# The sections issue 5 asks of every variant page, in its words.
REQUIRED_VARIANT_SECTIONS = (
    "Shapes and axes",
    "Forward",
    "Statistics",
    "Jacobian: direct path and path through the batch statistics",
    "Backward (VJP)",
    "Invariants",
    "Running statistics and eval mode",
    "Corrections",
    "Checks of the battery",
)


@pytest.fixture(scope="module")
def files() -> dict:
    return {f.path: f.content for f in generate.generated_files()}


def _pages(files: dict, suffix: str) -> dict[str, str]:
    return {path.stem: content for path, content in files.items() if path.suffix == suffix}


def test_docs_are_fresh(capsys):
    assert docs.run(check=True) == 0, capsys.readouterr().out


def _cached(files: dict, moved=lambda path: path) -> list[outputs.GeneratedFile]:
    return [outputs.GeneratedFile(moved(path), content) for path, content in files.items()]


def test_check_names_stale_and_stray_files(tmp_path, monkeypatch, capsys, files):
    cached = _cached(files, lambda path: tmp_path / path.relative_to(generate.DOCS_DIR))
    monkeypatch.setattr(generate, "generated_files", lambda records=None: list(cached))
    monkeypatch.setattr(generate, "SPEC_DIR", tmp_path / "spec")
    monkeypatch.setattr(generate, "SITE_DIR", tmp_path / "site")
    assert docs.run() == 0
    assert docs.run(check=True) == 0
    (tmp_path / "spec" / "layer_norm.md").write_text("edited by hand\n")
    (tmp_path / "spec" / "img" / "jacobian_centered.png").write_bytes(b"not a png")
    (tmp_path / "site" / "old_page.html").write_text("<p>left over</p>\n")
    capsys.readouterr()
    assert docs.run(check=True) == 1
    out = capsys.readouterr().out
    assert "stale: " in out and "layer_norm.md" in out and "jacobian_centered.png" in out
    assert "not generated: " in out and "old_page.html" in out


def test_check_reports_a_stray_file_in_docs_spec(monkeypatch, capsys, files):
    """The real docs/spec: a page generation does not produce (left over, or added by hand) fails --check."""
    monkeypatch.setattr(generate, "generated_files", lambda records=None: _cached(files))
    stray = generate.SPEC_DIR / "stray_page_for_test.md"
    assert not stray.exists()
    try:
        stray.write_text("# not generated\n")
        assert docs.run(check=True) == 1
        out = capsys.readouterr().out
        assert f"not generated: {stray.relative_to(codegen.ROOT)}" in out
    finally:
        stray.unlink(missing_ok=True)


def test_with_battery_records_the_run_and_draws_it(tmp_path, monkeypatch, capsys):
    """``normspec docs --with-battery`` writes docs/verification.json and the battery picture from the run."""
    records = [{"implementation": "numpy_ref", "variant": v, "dtype": "float64", "check": "forward",
                "status": "passed", "max_abs": 1e-16, "worst_ratio": 0.01, "examples": 8} for v in variants.NAMES]
    monkeypatch.setattr(battery_data, "battery_figure_data", lambda: [dict(r) for r in records])
    monkeypatch.setattr(battery_data, "VERIFICATION_JSON", tmp_path / "verification.json")
    for name in ("SPEC_DIR", "IMG_DIR", "SITE_DIR"):
        monkeypatch.setattr(generate, name, tmp_path / getattr(generate, name).relative_to(generate.DOCS_DIR))
    assert docs.run(with_battery=True) == 0
    assert battery_data.read_verification(tmp_path / "verification.json") == records
    assert (tmp_path / "spec" / "img" / "battery.png").read_bytes().startswith(b"\x89PNG")
    n = len(variants.NAMES)
    assert f"| numpy_ref | {n} | 0 | 0 | 0 |" in (tmp_path / "spec" / "index.md").read_text()
    capsys.readouterr()
    assert docs.run(check=True, with_battery=True) == 0, capsys.readouterr().out


def test_write_touches_only_changed_files(tmp_path):
    files = [outputs.GeneratedFile(tmp_path / "a.png", b"\x89PNG"), outputs.GeneratedFile(tmp_path / "a.md", "# a\n")]
    assert sorted(outputs.write(files)) == sorted(f.path for f in files)
    assert outputs.write(files) == []


def test_every_formula_parses(files):
    for name, text in _pages(files, ".md").items():
        found = latex.formulas(text)
        assert len(found) > 10, f"{name}.md: only {len(found)} formulas"
        for kind, tex in found:
            assert tex.count("{") == tex.count("}"), f"{name}.md: unbalanced braces in {tex!r}"
            mathml = latex.to_mathml(tex, display=kind == "display")  # raises on an unconverted command
            assert mathml.startswith("<math"), (name, tex)


def test_html_is_mathml_with_no_tex_left(files):
    pages = _pages(files, ".html")
    assert set(pages) == {"index", *variants.NAMES, "calling_conventions"}
    for name, html in pages.items():
        assert html.count("<math") > 10, f"{name}.html has no MathML"
        assert "$" not in html, f"{name}.html has a $ math delimiter left"
        assert "\\" not in html, f"{name}.html has TeX left: {html[html.index(chr(92)) - 80:][:160]!r}"
        assert "```" not in html
        assert "http://" not in html.replace('xmlns="http://www.w3.org/1998/Math/MathML"', "")
        assert "https://" not in html and "<script" not in html, f"{name}.html reaches for the network"
        for target in re.findall(r'(?:src|href)="([^"#]+)', html):
            assert (generate.SITE_DIR / target).resolve().exists() or target.endswith(".py"), (name, target)


def test_every_variant_page_has_every_section(files):
    pages = _pages(files, ".md")
    for variant in variants.NAMES:
        headings = re.findall(r"^## (.+)$", pages[variant], re.MULTILINE)
        missing = [s for s in REQUIRED_VARIANT_SECTIONS if s not in headings]
        assert not missing, f"{variant}.md lacks {missing}"
        assert any(h.startswith("Known deviations") for h in headings)
    index_headings = re.findall(r"^## (.+)$", pages["index"], re.MULTILINE)
    for required in ("Variants", "Cross-variant identities", "Conventions across frameworks", "Corrections"):
        assert required in index_headings


def test_pages_state_the_derivation_hash(files):
    expected = codegen.derivation_hash()
    for path, content in files.items():
        if path.suffix in (".md", ".html"):
            stated = re.findall(r'derivation-hash(?: `| <code>|" content=")([0-9a-f]{16})', content)
            assert stated and set(stated) == {expected}, (path, stated)
    generated = (codegen.GENERATED_DIR / "numpy_kernels.py").read_text()
    assert f"derivation-hash: {expected}" in generated


def test_pngs_are_pngs(files):
    images = {p.name: c for p, c in files.items() if p.suffix == ".png"}
    assert {"jacobian_centered.png", "jacobian_rms.png", "second_moment.png"} <= set(images)
    assert all(c.startswith(b"\x89PNG\r\n\x1a\n") for c in images.values())


def test_generation_is_byte_identical_across_hash_seeds(files):
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(str(path).encode() + (files[path] if isinstance(files[path], bytes) else files[path].encode()))
    code = ("import hashlib; from normspec import docs; d = hashlib.sha256(); "
            "fs = {f.path: f.content for f in docs.generated_files()}; "
            "b = {p: c if isinstance(c, bytes) else c.encode() for p, c in fs.items()}; "
            "[d.update(str(p).encode() + b[p]) for p in sorted(b)]; print(d.hexdigest())")
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    other = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    assert other.stdout.strip() == digest.hexdigest()


# --- the mathematics the pages print ---------------------------------------------------------

@pytest.mark.parametrize("family", [sym.CENTERED, sym.RMS], ids=lambda f: f.name)
def test_jacobian_read_off_the_vjp_is_the_brute_force_derivative(family):
    """At N = 3, in exact arithmetic: d xhat_i / d x_j of the plain definition = the printed entry."""
    n = 3
    xs = sp.symbols(f"x_1:{n + 1}", real=True)
    s = sp.Symbol("s", positive=True)  # sqrt(var + eps)
    mean = sp.Add(*xs) / n if family.centered else sp.Integer(0)
    var = sp.Add(*[(x - mean) ** 2 for x in xs]) / n
    xhat = [(x - mean) / sp.sqrt(var + sym.eps) for x in xs]
    entry = mathematics.jacobian(family).total
    for i in range(n):
        for j in range(n):
            brute = sp.diff(xhat[i], xs[j]).subs(sym.eps, s**2 - var)
            derived = entry.subs({mathematics.element(sym.xhat, mathematics.I): (xs[i] - mean) / s,
                                  mathematics.element(sym.xhat, mathematics.J): (xs[j] - mean) / s,
                                  sym.rstd: 1 / s, mathematics.N: n, mathematics.DELTA: int(i == j)})
            assert sp.cancel(brute - derived) == 0, (family.name, i, j)


@pytest.mark.parametrize("family", [sym.CENTERED, sym.RMS], ids=lambda f: f.name)
def test_jacobian_picture_matches_finite_differences(family):
    x, eps = figures.jacobian_sample(family)
    matrices = figures.jacobian_matrices(family, x, eps)

    def xhat(v):
        m = v.mean() if family.centered else 0.0
        return (v - m) / np.sqrt(((v - m) ** 2).mean() + eps)

    step = 1e-6
    numeric = np.stack([(xhat(x + step * e) - xhat(x - step * e)) / (2 * step) for e in np.eye(len(x))], axis=1)
    np.testing.assert_allclose(matrices["sum"], numeric, atol=1e-8)
    np.testing.assert_allclose(matrices["direct"] + matrices["batch"], matrices["sum"], atol=1e-14)
    assert np.count_nonzero(matrices["direct"] - np.diag(np.diag(matrices["direct"]))) == 0


def test_invariants_are_the_known_identities():
    fact, written_out = mathematics.second_moment(sym.CENTERED)
    assert sp.simplify(written_out - sym.var / (sym.var + sym.eps)) == 0
    assert mathematics.identity_recovery(sym.CENTERED, sp.sqrt(sym.var + sym.eps)) == 0
    assert mathematics.identity_recovery(sym.CENTERED, sym.var) != 0
    assert mathematics.identity_recovery(sym.RMS, sp.sqrt(sym.var + sym.eps)) == 0
    assert mathematics.group_mean_of(sym.derive(sym.CENTERED).dx, sym.CENTERED) == 0
    for family in (sym.CENTERED, sym.RMS):
        assert mathematics.scale_invariant(family)
    assert mathematics.gradient_sums(sym.CENTERED)[0] == 0 and mathematics.gradient_sums(sym.RMS)[0] != 0


# --- the options of the program: weight offset, fused residual add, modulation ----------------------

NEW_VARIANTS = ("fused_add_layer_norm", "fused_add_rms_norm", "adaptive_layer_norm", "adaptive_rms_norm")


def _section(page: str, heading: str) -> str:
    start = page.index(f"\n## {heading}\n")
    end = page.find("\n## ", start + 1)
    return page[start:end if end >= 0 else None]


def _display(page: str) -> list[str]:
    return [tex for kind, tex in latex.formulas(page) if kind == "display"]


def test_every_new_variant_has_its_page(files):
    md, html = _pages(files, ".md"), _pages(files, ".html")
    for name in NEW_VARIANTS:
        assert name in md and name in html, name
        assert f"[{name}]({name}.md)" in md["index"]


@pytest.mark.parametrize("name", ["fused_add_layer_norm", "fused_add_rms_norm"])
def test_fused_add_page_sums_first_and_passes_the_residual_gradient_through(files, name):
    page = _pages(files, ".md")[name]
    forward = _display(_section(page, "Forward"))
    assert forward[0] == latex.equation(sym.s, sym.x + sym.residual), forward  # s = x + x_r comes first
    assert not any(tex.startswith("x_{c} = x") for tex in forward)  # the norm's input is s
    backward = _display(_section(page, "Backward (VJP)"))
    g_s = latex.latex(sym.g_s)
    assert any(tex.startswith("dx = " + g_s + " + r") for tex in backward), backward  # g_s beside J^T h
    assert any(tex.startswith(r"dx_{\text{direct}} = " + g_s) for tex in backward)
    assert "dx_{r} = dx" in backward and any(tex.startswith("dx - " + g_s + " = r") for tex in backward)
    invariants = _display(_section(page, "Invariants"))
    sums = [tex for tex in invariants if tex.startswith(r"\sum_{\text{group}} \left(dx - " + g_s + r"\right) = ")]
    assert sums, invariants
    centered = variants.get(name).centered
    assert sums[0].endswith(" = 0") == centered  # the sum of dx - g_s over the group is 0 with centering


def test_fused_add_pass_through_is_the_plain_norms_vjp():
    for family in (sym.CENTERED_RESIDUAL, sym.RMS_RESIDUAL):
        passed, norm = mathematics.pass_through(family)
        assert passed == sym.g_s and norm == sym.derive(mathematics.base_family(family)).dx
        assert mathematics.jacobian(family) == mathematics.jacobian(mathematics.base_family(family))
    assert mathematics.gradient_sums(sym.CENTERED_RESIDUAL)[0] == 0
    assert mathematics.identity_recovery(sym.CENTERED_RESIDUAL, sp.sqrt(sym.var + sym.eps)) == 0


@pytest.mark.parametrize("name", ["adaptive_layer_norm", "adaptive_rms_norm"])
def test_adaptive_page_shows_one_plus_scale_and_shift(files, name):
    page = _pages(files, ".md")[name]
    forward = _display(_section(page, "Forward"))
    y = forward[-1]
    assert r"\left(1 + \text{scale}\right)" in y and y.startswith("y = "), y
    assert (r"\text{shift}" in y) == variants.get(name).has_bias
    assert not any(tex.startswith(r"\gamma = ") for tex in forward)  # gamma is written out
    assert r"h = g \left(1 + \text{scale}\right)" in _section(page, "Backward (VJP)")
    assert r"d\text{scale} = \sum_{\text{non-affine}} \hat{x} g" in page
    assert "| scale" in page and "| d scale" in page
    assert r"y\Big|_{\text{scale} \to 0" in page  # zero modulation is the plain norm
    assert "**gamma and beta are per" not in page  # scale and shift are per sample, not shared


@pytest.mark.parametrize("name", ["layer_norm", "rms_norm", "fused_add_layer_norm", "fused_add_rms_norm"])
def test_offset_pages_show_gamma_as_weight_plus_offset(files, name):
    page = _pages(files, ".md")[name]
    assert r"\gamma = c + w" in _display(_section(page, "Forward"))
    assert r"y = \beta + \hat{x} \gamma" in page or r"y = \hat{x} \gamma" in page
    invariants = _section(page, "Invariants")
    assert "**Weight offset.**" in invariants
    assert r"g \left(c + w\right)" in invariants  # dx reads gamma = w + c ...
    assert r"dw = \sum_{\text{non-affine}} \hat{x} g" in invariants  # ... d w keeps its form


@pytest.mark.parametrize("name", ["batch_norm", "instance_norm", "group_norm"])
def test_pages_without_the_option_show_no_offset(files, name):
    page = _pages(files, ".md")[name]
    for tex in _display(page):
        bare = re.sub(r"\\(?:text|operatorname)\{[^}]*\}|\\[A-Za-z]+|x_\{c\}", " ", tex)
        assert not re.search(r"\b[cw]\b", bare), (name, tex)  # neither the offset c nor the weight w
    assert r"y = \beta + \hat{x} \gamma" in page and r"d\gamma = " in page
    assert "Weight offset" not in page and "weight_offset" not in page
    assert "| gamma and beta |" in page
    if name == "batch_norm":  # eval mode: y = A x + B with A = gamma / sqrt(var + eps), as before the offset
        assert r"A = \frac{\gamma}{\sqrt{\epsilon + \sigma^{2}}}" in page


TYPICAL_BUGS = {
    "NVIDIA/TransformerEngine#67": ("layer_norm", "rms_norm", *NEW_VARIANTS),
    "linkedin/Liger-Kernel#74": ("layer_norm", "rms_norm", "fused_add_layer_norm", "fused_add_rms_norm"),
    "Dao-AILab/quack#53": ("fused_add_layer_norm", "fused_add_rms_norm"),
    "pytorch/pytorch#108048": ("layer_norm", "fused_add_layer_norm"),
}


def test_typical_bugs_name_their_issues_on_the_pages_they_concern(files):
    pages = _pages(files, ".md")
    for name in variants.NAMES:
        section = _section(pages[name], "Typical bugs")
        for issue, where in TYPICAL_BUGS.items():
            assert (issue in section) == (name in where), (name, issue)
    for issue in TYPICAL_BUGS:
        assert issue in _section(pages["index"], "Typical bugs")
    assert prose.BUGS.name == "bugs.toml" and len(prose.bugs()) == len(TYPICAL_BUGS)


def test_typical_bugs_show_what_the_bug_computes(files):
    quack = _section(_pages(files, ".md")["fused_add_rms_norm"], "Typical bugs")
    wrong = sym.derive(sym.RMS).dx.xreplace({sym.g: sym.g + sym.g_s})  # (dres + dout) * dnorm
    assert latex.equation(r"dx_{\text{bug}}", wrong) in quack
    te = _section(_pages(files, ".md")["layer_norm"], "Typical bugs")
    assert r"dx - dx_{\text{bug}} = c r \left(g - " in te  # off by c times the plain VJP
    _, wrong, difference = mathematics.mistake("offset_dropped_in_backward", sym.CENTERED)
    assert sp.expand(sym.expand_means(sp.expand(difference.subs(sym.c, 0)))) == 0


def test_verification_report_is_drawn(tmp_path):
    records = [{"implementation": impl, "variant": v, "dtype": d, "check": "forward", "status": status,
                "max_abs": value}
               for impl in ("numpy_ref", "torch_native") for v in variants.NAMES
               for d, status, value in (("float64", "passed", 1e-16), ("float32", "failed", 3e-7),
                                        ("bfloat16", "skipped", None))]
    path = tmp_path / "verification.json"
    path.write_text(json.dumps(records))
    assert battery_data.read_verification(path) == records
    assert battery_data.read_verification(tmp_path / "absent.json") is None
    assert figures.battery_figure(records).startswith(b"\x89PNG")
    page = pages.index_page(records)
    n = len(variants.NAMES)
    assert "img/battery.png" in page and f"| torch_native | {n} | {n} | 0 | {n} |" in page
    table = pages.variant_page(variants.get("layer_norm"), records)
    assert "| numpy_ref | float64 | — | 1.00e-16 | 1 | 0 | 0 | 0 |" in table
    assert "| numpy_ref | float32 | — | — | 0 | 1 | 0 | 0 |" in table  # a failure's error is no max
    with_ratio = [dict(r, worst_ratio=0.25) for r in records]
    assert battery_data.battery_summary(with_ratio)[("torch_native", "rms_norm", "float64")]["worst_ratio"] == 0.25
    assert figures.battery_figure(with_ratio).startswith(b"\x89PNG")
    path.write_text(json.dumps([{"implementation": "x"}]))
    with pytest.raises(ValueError, match="lacks"):
        battery_data.read_verification(path)


def test_readme_links_the_spec():
    readme = (codegen.ROOT / "README.md").read_text()
    assert "docs/spec/index.md" in readme


def test_unknown_check_names_fail_generation():
    statement = dataclasses.replace(statements.Statement("t", "p"), checks=("no_such_check",))
    with pytest.raises(KeyError, match="no_such_check"):
        statements.render(statement, variants.get("layer_norm"))


def test_a_slot_without_a_value_or_a_value_without_a_slot_fails():
    assert prose.fill("a $b c", b="B") == "a B c"
    with pytest.raises(KeyError, match="no value"):
        prose.fill("a $b $c", b="B")
    with pytest.raises(KeyError, match="no slot"):
        prose.fill("a $b", b="B", formula="dropped")


# --- the generator: prose, style and conventions live in files -------------------------------------

GENERATOR_MODULES = sorted((codegen.ROOT / "docs").glob("*.py"))
LONGEST_STRING = 100  # characters: a table's header row, an error message; not a paragraph


def _strings(path) -> list[tuple[int, str]]:
    """Every string constant of a module but its docstrings (f-strings by their literal parts)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_the_style_sheet_and_the_prose_are_files(files):
    assert (codegen.ROOT / "docs" / "style.css").read_text() == files[generate.SITE_DIR / "style.css"]
    for name in ("header", "index", "variant"):
        assert (codegen.ROOT / "docs" / "templates" / f"{name}.md").exists()
    assert prose.entry("statement", "second_moment")["checks"] == ["second_moment"]
    assert prose.conventions()["rows"], "conventions.toml has no rows"
    css_block = re.compile(r"[\w.#:-]+\s*\{[^{}]*:[^{}]*;")
    offenders = []
    for path in GENERATOR_MODULES:
        for line, value in _strings(path):
            if css_block.search(value) or len(value) > LONGEST_STRING:
                offenders.append(f"{path.name}:{line} {value[:60]!r}... ({len(value)} characters)")
    assert offenders == [], "prose or CSS in Python strings (move it to docs/templates, statements.toml, style.css)"


def test_generator_modules_are_split_by_role():
    sizes = {path.name: len(path.read_text().splitlines()) for path in GENERATOR_MODULES}
    assert {"mathematics.py", "statements.py", "figures.py", "battery_data.py", "pages.py", "site.py",
            "generate.py"} <= set(sizes)
    assert max(sizes.values()) < 400, sizes


def test_every_statement_and_text_of_the_prose_file_is_used(files):
    """An entry of statements.toml that no page shows is prose nobody reads (or a renamed key)."""
    markdown = "\n".join(content for path, content in files.items() if path.suffix == ".md")
    for key in prose.keys("statement"):
        title = prose.entry("statement", key)["title"]
        if "$" not in title:
            assert f"**{title}.**" in markdown, key
    for key in prose.keys("correction"):
        assert f'<a id="{key}"></a>' in markdown, key
