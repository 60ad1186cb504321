"""The developers' guide rules that code review used to catch, checked over the source tree."""

import ast
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "mfspark"
# Private pyspark/JVM/numba attributes: `_jsc`, `_jvm`, `_jdf`, `_jrdd...`, `_reserialize`, numba's `_cache`.
PRIVATE_HOOK = re.compile(r"\._(j[a-z]+|reserialize|cache\._impl)\b")


def sources() -> dict[Path, str]:
    return {path.relative_to(REPO): path.read_text() for path in sorted(PACKAGE.rglob("*.py"))}


def test_private_spark_hooks_live_only_in_spark_internals():
    offenders = [f"{path}:{n}" for path, text in sources().items() if path.name != "spark_internals.py"
                 for n, line in enumerate(text.splitlines(), 1) if PRIVATE_HOOK.search(line)]
    assert offenders == []


# The layers, lowest first (docs/architecture.md): a module imports only from its own layer or a lower one.
LAYERS = (
    ("mfspark", "mfspark.errors"),
    ("mfspark.runtime",),
    ("mfspark.data",),
    ("mfspark.recommend",),
    ("mfspark.models",),
    ("mfspark.evaluation",),
    ("mfspark.pipeline",),
    ("mfspark.report",),
    ("mfspark.commands",),
)


def layer_of(module: str) -> int:
    """The layer of a dotted module name: the one listing its longest prefix."""
    prefix = max((p for layer in LAYERS for p in layer if module == p or module.startswith(p + ".")), key=len)
    return next(i for i, layer in enumerate(LAYERS) if prefix in layer)


def module_name(path: Path) -> str:
    parts = path.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(text: str) -> list[tuple[int, str]]:
    """(line, module) of every import in `text`, late ones inside functions too; `from package import a`
    gives package.a (a may be a submodule: judged as one, it sits in package's layer anyway). A relative
    import gives '.': the rules below need absolute names, as the rest of the code writes them."""
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found += [(node.lineno, "." if node.level else f"{node.module}.{alias.name}") for alias in node.names]
    return found


def test_imports_never_run_up_a_layer():
    offenders = []
    for path, text in sources().items():
        own = layer_of(module_name(path))
        offenders += [f"{path}:{line}: imports {target} (layer {layer_of(target)}, its own {own})"
                      for line, target in imports(text) if target.split(".")[0] in ("mfspark", "")
                      and (target == "." or layer_of(target) > own)]
    assert not offenders, "\n".join(offenders)


# pyspark modules outside its public API: imported by runtime/spark_internals.py alone, as the private attributes.
PRIVATE_PYSPARK_MODULES = ("pyspark.serializers", "pyspark.daemon", "pyspark.worker", "pyspark.sql.pandas")


def is_private_pyspark(target: str) -> bool:
    return target.split(".")[0] == "pyspark" and (
        any(part.startswith("_") for part in target.split("."))
        or any(target == private or target.startswith(private + ".") for private in PRIVATE_PYSPARK_MODULES))


def test_private_pyspark_imports_live_only_in_spark_internals():
    offenders = [f"{path}:{line}: imports {target}" for path, text in sources().items()
                 if path.name != "spark_internals.py" for line, target in imports(text) if is_private_pyspark(target)]
    assert not offenders, "\n".join(offenders)

def test_only_commands_take_argparse_namespaces():
    offenders = [str(path) for path, text in sources().items()
                 if "Namespace" in text and path.parts[1] != "commands"]
    assert offenders == []


def test_a_command_module_never_imports_another():
    shared = {"mfspark.commands.args", "mfspark.commands.main"}
    offenders = []
    for path, text in sources().items():
        if path.parts[1] != "commands" or path.name in ("args.py", "main.py", "__init__.py"):
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mfspark.commands") \
                    and node.module not in shared:
                offenders.append(f"{path}: from {node.module}")
    assert offenders == []


def test_the_configuration_reference_is_generated_from_the_current_parsers_and_profiles():
    checked = subprocess.run([sys.executable, "scripts/gen_config_reference.py", "--check"], cwd=REPO,
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
