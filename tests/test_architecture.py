"""The house by role holds: imports run one way, no module grows past a page count a reader
can hold, and the library never reaches up into the pipeline or Ray."""

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

LIB = REPO / "face_iqa"
ROLES = ("faces", "model", "learn", "judge")
# a role may not import the roles listed against it
FORBIDDEN = {
    "faces": {"model", "learn", "judge"},
    "model": {"learn", "judge"},
    "learn": {"judge"},
    "judge": set(),
}
MAX_LINES = 600


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            if node.module == "face_iqa":  # from face_iqa import judge
                out |= {f"face_iqa.{a.name}" for a in node.names}
    return out


def _role_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "face_iqa" and parts[1] in ROLES else None


def test_library_has_its_role_subpackages():
    for role in ROLES:
        assert (LIB / role / "__init__.py").is_file(), role
        assert len(list((LIB / role).glob("*.py"))) >= 2, role


@pytest.mark.parametrize("role", ROLES)
def test_imports_run_one_way(role):
    bad = []
    for path in sorted((LIB / role).rglob("*.py")):
        for mod in _imports(path):
            if _role_of(mod) in FORBIDDEN[role]:
                bad.append(f"{path.relative_to(REPO)} imports {mod}")
    assert not bad, "\n".join(bad)


def test_shared_top_level_modules_import_no_role():
    bad = []
    for path in sorted(LIB.glob("*.py")):
        if path.name == "__init__.py":  # re-exports the public verbs
            continue
        bad += [f"{path.name} imports {m}" for m in _imports(path) if _role_of(m)]
    assert not bad, "\n".join(bad)


def test_library_and_workers_never_import_ray_or_the_pipeline():
    bad = []
    for folder in ("face_iqa", "workers"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for mod in _imports(path):
                top = mod.split(".")[0]
                if top in ("ray", "pipeline") or (folder == "face_iqa" and top == "workers"):
                    bad.append(f"{path.relative_to(REPO)} imports {mod}")
    assert not bad, "\n".join(bad)


def test_no_module_over_the_page_limit():
    long = []
    for folder in ("face_iqa", "workers", "pipeline"):
        for path in sorted((REPO / folder).rglob("*.py")):
            n = len(path.read_text().splitlines())
            if n > MAX_LINES:
                long.append(f"{path.relative_to(REPO)}: {n} lines")
    assert not long, "\n".join(long)


def test_import_checker_sees_a_forbidden_import(tmp_path):
    """The checker itself: a function-level import of a higher role is found."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from face_iqa.judge.video import video_pairs\n")
    assert any(_role_of(m) == "judge" for m in _imports(f))
    f.write_text("from face_iqa import learn\n")
    assert "face_iqa.learn" in _imports(f)


def test_cli_parser_module_holds_no_command_bodies():
    """``pipeline/cli.py`` parses and dispatches; every command's body is a function of
    ``pipeline.commands``, and every parser command has one."""
    import importlib

    from pipeline.cli import COMMANDS, _parser

    sub = next(a for a in _parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)
    for family, name in COMMANDS.values():
        assert callable(getattr(importlib.import_module(f"pipeline.commands.{family}"), name))
    tree = ast.parse((REPO / "pipeline" / "cli.py").read_text())
    defs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    assert defs <= {"_env", "_add_config_args", "_Version", "_parser", "main"}, defs
