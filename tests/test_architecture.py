"""The layout's rules (docs/architecture.md), checked on the source tree itself: what model/ may
import from labeling/, SQL only inside the store, options as objects, small helpers defined once,
and a command line that imports no engine until a command runs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CODE = ("cli.py", "schemas", "prompts", "labeling", "model")
PUBLIC_LABELING_PACKAGES = {
    "labeling.ingest",
    "labeling.sources",
    "labeling.sources.llm",
    "labeling.sources.rules",
    "labeling.sources.imports",
    "labeling.sources.combine",
    "labeling.review",
}
MAX_PARAMETERS = 8


def python_files(*roots: str) -> list[Path]:
    files: list[Path] = []
    for root in roots:
        path = REPO / root
        files.extend([path] if path.is_file() else sorted(path.rglob("*.py")))
    return [f for f in files if "__pycache__" not in f.parts]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, relative imports resolved."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module_name(path).split(".")
                if path.name != "__init__.py":
                    package = package[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            found.append((node.lineno, base))
    return found


def test_labeling_never_imports_model():
    offending = [
        f"{f.relative_to(REPO)}:{line} imports {name}"
        for f in python_files("labeling", "schemas", "prompts")
        for line, name in imported_modules(f)
        if name == "model" or name.startswith("model.")
    ]
    assert offending == []


def allowed_from_model(name: str) -> bool:
    if not name.startswith("labeling."):
        return True
    return (
        name.startswith(("labeling.core.", "labeling.store."))
        or name in ("labeling.core", "labeling.store")
        or name in PUBLIC_LABELING_PACKAGES
        or name.endswith(".commands")
    )


def test_model_uses_only_labelings_shared_ground_and_public_api():
    offending = [
        f"{f.relative_to(REPO)}:{line} imports {name}"
        for f in python_files("model")
        for line, name in imported_modules(f)
        if not allowed_from_model(name)
    ]
    assert offending == []


def test_the_rule_itself_tells_public_from_internal():
    assert allowed_from_model("labeling.sources.rules")
    assert allowed_from_model("labeling.store.run_records")
    assert allowed_from_model("labeling.sources.commands")
    assert not allowed_from_model("labeling.sources.rules.run")
    assert not allowed_from_model("labeling.review.compare")


class StoreSQL(ast.NodeVisitor):
    """Uses of a store's connection or raw-SQL helpers: `<x>.con`, `<x>.arrow(...)`, `<x>._dicts(...)`."""

    def __init__(self) -> None:
        self.found: list[int] = []

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in ("con", "arrow", "_arrow", "_dicts") and not (
            isinstance(node.value, ast.Name) and node.value.id in ("self", "pa", "np", "duckdb")
        ):
            self.found.append(node.lineno)
        self.generic_visit(node)


def test_sql_runs_only_inside_the_store():
    offending = []
    for f in python_files("cli.py", "labeling", "model", "bench"):
        if f.is_relative_to(REPO / "labeling" / "store"):
            continue
        visitor = StoreSQL()
        visitor.visit(ast.parse(f.read_text(encoding="utf-8")))
        offending.extend(f"{f.relative_to(REPO)}:{line}" for line in visitor.found)
    assert offending == []


def is_command(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A typer command takes one parameter per option; the rule is for everything else."""
    return node.name.endswith("_command")


def test_no_function_takes_more_than_eight_parameters():
    offending = []
    for f in python_files(*CODE, "bench"):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or is_command(node):
                continue
            arguments = node.args
            names = [a.arg for a in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]]
            if names and names[0] in ("self", "cls"):
                names = names[1:]
            if len(names) > MAX_PARAMETERS:
                offending.append(f"{f.relative_to(REPO)}:{node.lineno} {node.name} ({len(names)})")
    assert offending == []


# Each small helper has exactly one definition; the copies it replaced must not come back.
ONE_DEFINITION = {
    "finite": "labeling/core/formatting.py",
    "format_number": "labeling/core/formatting.py",
    "atomic_path": "labeling/core/files.py",
    "write_text_atomically": "labeling/core/files.py",
    "file_sha256": "labeling/core/files.py",
    "status_counts": "labeling/store/run_records.py",
    "check_new_run_name": "labeling/store/run_records.py",
    "resume_or_create": "labeling/store/run_records.py",
}
RETIRED_COPIES = ("_finite", "_fmt", "_number", "_write_whole", "_write_atomically", "_json_clean", "_csv_cell")


def definitions() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for f in python_files(*CODE):
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                found.setdefault(node.name, []).append(str(f.relative_to(REPO)))
        for node in tree.body:  # module-level constants; a local variable is no definition
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign)
                else []
            )
            for target in targets:
                if isinstance(target, ast.Name):
                    found.setdefault(target.id, []).append(str(f.relative_to(REPO)))
    return found


def test_each_small_helper_is_defined_once():
    found = definitions()
    assert {name: found.get(name) for name in ONE_DEFINITION} == {
        name: [where] for name, where in ONE_DEFINITION.items()
    }
    assert {name: found[name] for name in RETIRED_COPIES if name in found} == {}
    assert found.get("STATUS_RANK") == ["schemas/labels.py"]


HEAVY = (
    *("torch", "duckdb", "openai", "instructor", "spacy", "medspacy", "scipy", "matplotlib", "timm", "transformers"),
    *("crowdkit", "pandas"),
)


def test_the_command_line_imports_no_engine_until_a_command_runs():
    probe = f"import sys, cli; print(' '.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split() == []


@pytest.mark.parametrize("package", sorted(PUBLIC_LABELING_PACKAGES))
def test_public_labeling_packages_exist(package: str):
    assert (REPO / package.replace(".", "/") / "__init__.py").is_file()


def test_every_label_source_has_the_same_call_shape():
    """verb(store: Store, request, *, hooks: RunHooks | None = None) -> RunResult, for the LLM, the
    rules, the imports, derived runs and model predictions (annotations as written: the modules
    postpone their evaluation)."""
    import inspect

    from labeling.sources.combine import combine_runs
    from labeling.sources.imports import import_labels
    from labeling.sources.llm import label_with_llm
    from labeling.sources.rules import label_with_rules
    from model.evaluate.predict import predict_run
    from model.labels.label_specs import derive_run

    def shape(verb) -> tuple:
        signature = inspect.signature(verb)
        parameters = list(signature.parameters.values())
        return (
            [(p.name, p.kind.name) for p in parameters],
            str(parameters[0].annotation),
            (str(parameters[2].annotation), parameters[2].default),
            str(signature.return_annotation),
        )

    verbs = (label_with_llm, label_with_rules, import_labels, derive_run, predict_run, combine_runs)
    expected = (
        [("store", "POSITIONAL_OR_KEYWORD"), ("request", "POSITIONAL_OR_KEYWORD"), ("hooks", "KEYWORD_ONLY")],
        "Store",
        ("RunHooks | None", None),
        "RunResult",
    )
    assert {verb.__name__: shape(verb) for verb in verbs} == {verb.__name__: expected for verb in verbs}
