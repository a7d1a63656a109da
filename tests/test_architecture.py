"""The dependency direction and light import paths the architecture promises."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["families", "registry", "merge", "trainer", "cli"]  # each may import only those before it
FORBIDDEN_EVERYWHERE_BUT_CLI = {"typer", "rich"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_dependency_direction():
    problems = []
    for i, layer in enumerate(LAYERS):
        later = LAYERS[i + 1:]
        for path in (ROOT / layer).rglob("*.py"):
            for mod in _imports(path):
                parts = mod.split(".")
                if parts[0] == "loradex" and len(parts) > 1 and parts[1] in later:
                    problems.append(f"{path.relative_to(ROOT)} imports {mod}")
                if layer != "cli" and parts[0] in FORBIDDEN_EVERYWHERE_BUT_CLI:
                    problems.append(f"{path.relative_to(ROOT)} imports {mod} (only cli/ may)")
    assert not problems, "\n".join(problems)


PACKAGE_FOLDERS = {"families": "loradex.families", "registry": "loradex.registry", "merge": "loradex.merge", "trainer": "loradex.trainer",
                   "cli": "loradex.cli"}
# Wings inside a package, lowest first: a module may import its own wing, the wings of a lower rank
# and the package's root modules that everything uses (errors, paths, crashpoints, untrusted).
REGISTRY_WINGS = {"files": 0, "probe": 1, "catalog": 2, "remotes": 3, "folders": 4, "server": 5}
MERGE_WINGS = {"math": 0, "conventions": 1, None: 2}  # None: the catalog operations at merge/'s root
REGISTRY_ROOT_MODULES = {"errors", "paths", "crashpoints", "untrusted"}


def _module_of(path: Path) -> tuple[str, bool]:
    rel = path.relative_to(ROOT)
    parts = list(rel.with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join([PACKAGE_FOLDERS[parts[0]], *parts[1:]]), is_package


def _absolute_imports(path: Path) -> set[str]:
    """Every loradex module (or name in one) the file imports, relative imports resolved."""
    module, is_package = _module_of(path)
    package = module if is_package else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith("loradex.")}


def _wing(module: str, package: str, wings: dict) -> object:
    rest = module[len(package) + 1:].split(".") if module.startswith(package + ".") else []
    if rest and rest[0] in wings and rest[0] is not None:
        return rest[0]
    return None


def test_registry_wings_stand_only_on_lower_wings():
    problems = []
    for path in (ROOT / "registry").rglob("*.py"):
        module, _ = _module_of(path)
        own = _wing(module, "loradex.registry", REGISTRY_WINGS)
        for target in _absolute_imports(path):
            if not target.startswith("loradex.registry."):
                continue
            head = target.split(".")[2]
            wing = _wing(target, "loradex.registry", REGISTRY_WINGS)
            if wing is None:
                if head not in REGISTRY_ROOT_MODULES:
                    problems.append(f"{module} imports {target} (neither a wing nor a root module)")
                continue
            if own is None and module.split(".")[2] in REGISTRY_ROOT_MODULES:
                problems.append(f"root module {module} imports the wing module {target}")
            elif own is not None and wing != own and REGISTRY_WINGS[wing] >= REGISTRY_WINGS[own]:
                problems.append(f"{module} ({own}) imports {target} ({wing}): not a lower wing")
    assert not problems, "\n".join(sorted(problems))


def test_merge_math_stands_alone_and_conventions_below_the_operations():
    problems = []
    for path in (ROOT / "merge").rglob("*.py"):
        module, _ = _module_of(path)
        own = _wing(module, "loradex.merge", MERGE_WINGS)
        for target in _absolute_imports(path):
            if own == "math" and not (target.startswith("loradex.merge.math.")
                                      or target.startswith("loradex.registry.errors.")):
                problems.append(f"{module} (math) imports {target}: math imports no other loradex module")
            if target.startswith("loradex.merge.") and module != "loradex.merge":
                wing = _wing(target, "loradex.merge", MERGE_WINGS)
                if wing != own and MERGE_WINGS[wing] > MERGE_WINGS[own]:
                    problems.append(f"{module} ({own or 'root'}) imports {target} ({wing or 'root'})")
    assert not problems, "\n".join(sorted(problems))


def test_model_weights_plumbing_imports_neither_entry_point():
    """extract and bake (and bake's layout changes) stand on the shared model plumbing, never the
    other way round (they used to import each other in a circle)."""
    found = _absolute_imports(ROOT / "merge" / "model_weights.py")
    entry_points = ("loradex.merge.extract.", "loradex.merge.bake.", "loradex.merge.bake_layouts.")
    assert not [t for t in found if t.startswith(entry_points)]


def test_nothing_but_cli_imports_the_server():
    problems = []
    for folder in ("registry", "merge", "trainer"):
        for path in (ROOT / folder).rglob("*.py"):
            module, _ = _module_of(path)
            if module.startswith("loradex.registry.server"):
                continue
            problems += [f"{module} imports {t}" for t in _absolute_imports(path)
                         if t.startswith("loradex.registry.server.")]
    assert not problems, "\n".join(sorted(problems))


def test_registry_imports_without_torch():
    code = (
        "import sys, pkgutil, importlib, loradex.registry as r\n"
        "for m in pkgutil.walk_packages(r.__path__, 'loradex.registry.'):\n"
        "    if '.migrations' in m.name: continue\n"
        "    importlib.import_module(m.name)\n"
        "heavy = [m for m in ('torch', 'diffusers', 'peft', 'transformers') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "", f"importing loradex.registry pulled in: {out.strip()}"


def test_help_path_is_light():
    code = (
        "import sys\n"
        "from loradex.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'diffusers', 'peft', 'transformers', 'huggingface_hub') if m in sys.modules]\n"
        "sys.stderr.write('HEAVY=' + ','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "HEAVY=" in proc.stderr and proc.stderr.split("HEAVY=")[1].strip() == ""


def test_every_command_has_help_and_is_documented():
    from loradex.cli.app import app
    import typer.main

    group = typer.main.get_command(app)
    readme = (ROOT / "README.md").read_text() + "".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    missing_help, undocumented = [], []
    for name, cmd in group.commands.items():
        subs = getattr(cmd, "commands", None)
        entries = [(f"{name} {s}", c) for s, c in subs.items()] if subs else [(name, cmd)]
        for full, c in entries:
            if not (c.help or c.short_help):
                missing_help.append(full)
            if f"loradex {full}" not in readme:
                undocumented.append(full)
    assert not missing_help, f"commands without help: {missing_help}"
    assert not undocumented, f"commands not in README/docs: {undocumented}"


def test_every_subpackage_is_listed_in_pyproject():
    """A folder with __init__.py missing from [tool.setuptools] packages would be left out of the
    wheel (the editable install used in development hides the mistake)."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    for package, folder in config["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            name = ".".join([package, *rel.parts]) if rel.parts else package
            if "__pycache__" in rel.parts:
                continue
            assert name in listed, f"{name} ({init.parent.relative_to(ROOT)}) is not in pyproject packages"
    assert "*.json" in config["package-data"]["loradex.schemas"]


LEAVE_CODE = """
import atexit, sys
import torch  # loaded: the process ends through the fast exit
marker = sys.argv.pop(1)
atexit.register(lambda: open(marker, "w").write("atexit ran"))
from loradex.cli.main import main
main()
"""


def test_a_whole_process_with_torch_loaded_flushes_output_runs_atexit_and_keeps_exit_codes(tmp_path):
    """``main()`` as the process entry ends with os._exit once torch is loaded (skipping ~0.5 s
    of interpreter teardown): stdout/stderr must still be complete, atexit handlers must run and
    the exit code must be the command's."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "LORADEX_HOME": str(tmp_path / "home")}
    ok = subprocess.run([sys.executable, "-c", LEAVE_CODE, str(tmp_path / "ok"), "list", "--json"],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == []
    assert (tmp_path / "ok").read_text() == "atexit ran"
    bad = subprocess.run([sys.executable, "-c", LEAVE_CODE, str(tmp_path / "bad"), "show", "no-such-adapter"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: ") and "no-such-adapter" in bad.stderr
    assert (tmp_path / "bad").read_text() == "atexit ran"


# Files where a family's spelling is data of another kind, each with the reason. Everything else
# asks ``loradex.families`` (an aspect's declared facts, ``families.assumed`` for unknown bases).
FAMILY_LITERAL_ALLOWED = {
    # "sdxl" there names the two-encoder embedding FORMAT (register_embedding_format("sdxl")), which
    # `--to sdxl` / TrainConfig.format spell the same way; it is compared as a format, not a family
    ("merge/conventions/embedding_convert.py", "sdxl"),
    ("trainer/train_ti.py", "sdxl"),
}


def _family_literals(node: ast.AST, names: frozenset[str]) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value] if node.value in names else []
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [v for e in node.elts for v in _family_literals(e, names)]
    return []


def family_name_branches(path: Path, names: frozenset[str]) -> list[tuple[int, str]]:
    """(line, name) of every comparison with a family-name literal (``base == "sdxl"``,
    ``family in ("sd1", "sd2")``, ``case "flux":``) and every dict keyed or valued by one
    (``{768: "sd1"}``, ``{"sdxl": …}``) in one module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        parts: list[ast.AST] = []
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
        elif isinstance(node, ast.Dict):
            parts = [k for k in node.keys if k is not None] + [v for v in node.values if isinstance(v, ast.Constant)]
        elif isinstance(node, ast.MatchValue):
            parts = [node.value]
        found += [(node.lineno, name) for part in parts for name in _family_literals(part, names)]
    return sorted(found)


def test_family_name_branches_live_only_in_families():
    from loradex.families import family_names

    names = frozenset(family_names())
    problems = []
    for layer in LAYERS[1:]:
        for path in sorted((ROOT / layer).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            problems += [f"{rel}:{line} compares with / maps by the family name {name!r}: declare the fact in "
                         f"families/<family>/ and ask loradex.families"
                         for line, name in family_name_branches(path, names) if (rel, name) not in FAMILY_LITERAL_ALLOWED]
    assert not problems, "\n".join(problems)


def test_the_family_name_scan_sees_each_spelling_of_a_branch(tmp_path):
    code = tmp_path / "m.py"
    code.write_text('a = base == "sdxl"\nb = f in ("sd1", "x")\nc = {768: "sd2"}\nd = {"flux": 1}\n'
                    'match base:\n    case "sd3":\n        pass\ne = "sdxl" if x else "y"\n')
    assert family_name_branches(code, frozenset({"sd1", "sd2", "sdxl", "sd3", "flux"})) == [
        (1, "sdxl"), (2, "sd1"), (3, "sd2"), (4, "flux"), (6, "sd3")]
