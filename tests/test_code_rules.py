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
