"""``normspec docs``: every file of docs/spec and docs/site, in memory, written only when changed.

- ``docs/spec/index.md``, ``docs/spec/<variant>.md`` for each variant of the registry and
  ``docs/spec/calling_conventions.md`` (:mod:`pages`, :mod:`calling_conventions`);
- ``docs/spec/img/*.png``: the pictures (:mod:`figures`), deterministic to the byte;
- ``docs/site/*.html`` with ``style.css`` and a copy of the pictures (:mod:`site`).

Files go through the project's one writer (``normspec.derive.outputs``): ``run()`` writes
the stale ones, ``run(check=True)`` exits 1 naming stale files and files in docs/spec or
docs/site that generation does not produce. ``run(with_battery=True)`` first runs the
battery and records it in docs/verification.json (:mod:`battery_data`).
"""
from __future__ import annotations

import time
from pathlib import Path

from normspec.derive import codegen, outputs, symbolic as sym, variants
from normspec.derive.outputs import GeneratedFile
from normspec.docs import battery_data, calling_conventions, figures, pages, site

ROOT = codegen.ROOT
DOCS_DIR = ROOT / "docs"
SPEC_DIR = DOCS_DIR / "spec"
IMG_DIR = SPEC_DIR / "img"
SITE_DIR = DOCS_DIR / "site"
REGENERATE_COMMAND = pages.REGENERATE_COMMAND


def generated_files(records: list[dict] | None = None, *, read_report: bool = True) -> list[GeneratedFile]:
    """Every file of docs/spec and docs/site (``records``: the battery's, else docs/verification.json's)."""
    if records is None and read_report:
        records = battery_data.read_verification()
    texts = {"index": pages.index_page(records)}
    texts.update({name: pages.variant_page(record, records) for name, record in variants.VARIANTS.items()})
    texts[calling_conventions.PAGE] = pages.calling_conventions_page()
    images = {f"jacobian_{f.name}.png": figures.jacobian_figure(f) for f in (sym.CENTERED, sym.RMS)}
    images["second_moment.png"] = figures.second_moment_figure()
    if records is not None:
        images["battery.png"] = figures.battery_figure(records)
    files = [GeneratedFile(SPEC_DIR / f"{name}.md", text) for name, text in texts.items()]
    files += [GeneratedFile(IMG_DIR / name, data) for name, data in images.items()]
    files += [GeneratedFile(SITE_DIR / f"{name}.html", site.html_page(name, text)) for name, text in texts.items()]
    files.append(GeneratedFile(SITE_DIR / "style.css", site.style()))
    files += [GeneratedFile(SITE_DIR / "img" / name, data) for name, data in images.items()]
    return files


def folders() -> tuple[Path, ...]:
    """The folders generation owns: a file in them that it does not produce is a stray."""
    return SPEC_DIR, SITE_DIR


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run(check: bool = False, with_battery: bool = False) -> int:
    """``normspec docs``: write the docs (or, with ``check``, exit 1 naming stale and stray files).

    ``with_battery`` first runs the battery on the built-in implementations and records
    it in docs/verification.json (with ``check``: compares that file too).
    """
    start = time.perf_counter()
    records = None
    report = []
    if with_battery:
        records = battery_data.battery_figure_data()
        report = [GeneratedFile(battery_data.VERIFICATION_JSON, battery_data.verification_json(records))]
    files = report + generated_files(records)
    strays = outputs.strays(folders(), files)
    if check:
        stale = outputs.stale(files)
        for path in stale:
            print(f"stale: {_shown(path)} (regenerate with `{REGENERATE_COMMAND}`)")
        for path in strays:
            print(f"not generated: {_shown(path)} (remove it, or regenerate with `{REGENERATE_COMMAND}`)")
        if stale or strays:
            return 1
        print(f"docs are fresh ({len(files)} files, derivation-hash {codegen.derivation_hash()}, "
              f"{time.perf_counter() - start:.2f} s)")
        return 0
    written = set(outputs.write(files))
    for f in files:
        print(f"{'written' if f.path in written else 'unchanged'}: {_shown(f.path)}")
    for path in strays:
        print(f"not generated: {_shown(path)} (left in place; remove it by hand)")
    print(f"derivation-hash {codegen.derivation_hash()}, {time.perf_counter() - start:.2f} s")
    return 0
