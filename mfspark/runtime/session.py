"""SparkSession construction from `conf/<profile>.toml` plus command-line overrides.

Nothing here runs at import time: a session exists only once a job asks for one.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import tomllib

from mfspark.errors import ConfigError, JavaError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

MIN_JAVA_MAJOR = 17


@dataclass(frozen=True)
class Profile:
    """A resolved configuration profile: Spark settings and mfspark's own settings."""

    name: str
    spark: dict[str, str]
    checkpoint_dir: str
    log_level: str = "INFO"
    extra: dict[str, str] = field(default_factory=dict)


def conf_dirs() -> list[Path]:
    """Where profiles are looked up, first match wins."""
    candidates = []
    if os.environ.get("MFSPARK_CONF_DIR"):
        candidates.append(Path(os.environ["MFSPARK_CONF_DIR"]))
    candidates.append(Path.cwd() / "conf")
    candidates.append(Path(__file__).resolve().parents[1] / "conf")
    return candidates


def load_profile(
    name: str = "local",
    output_root: str | os.PathLike = "out",
    overrides: dict[str, str] | None = None,
    conf_dir: str | os.PathLike | None = None,
) -> Profile:
    """Read `<conf_dir>/<name>.toml`, substitute `{output_root}`, apply `key=value` overrides.

    Overrides whose key starts with `spark.` go to Spark; others set mfspark settings
    (`checkpoint_dir`, `log_level`).
    """
    dirs = [Path(conf_dir)] if conf_dir else conf_dirs()
    path = next((d / f"{name}.toml" for d in dirs if (d / f"{name}.toml").is_file()), None)
    if path is None:
        raise ConfigError(f"profile '{name}' not found: looked for {name}.toml in {', '.join(map(str, dirs))}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    root = str(Path(output_root).resolve()) if "://" not in str(output_root) else str(output_root)

    def fill(value: object) -> str:
        return str(value).replace("{output_root}", root)

    spark = {k: fill(v) for k, v in raw.get("spark", {}).items()}
    own = {k: fill(v) for k, v in raw.get("mfspark", {}).items()}
    for key, value in (overrides or {}).items():
        (spark if key.startswith("spark.") else own)[key] = fill(value)
    return Profile(
        name=name,
        spark=spark,
        checkpoint_dir=own.pop("checkpoint_dir", f"{root}/_checkpoints"),
        log_level=own.pop("log_level", "INFO"),
        extra=own,
    )


def parse_overrides(pairs: list[str] | None) -> dict[str, str]:
    """Turn repeated `--conf key=value` arguments into a dict, rejecting malformed ones."""
    result = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--conf expects key=value, got '{pair}'")
        result[key.strip()] = value.strip()
    return result


def java_major_version(java: str | None = None) -> int:
    """Major version of the Java runtime Spark will use (JAVA_HOME first, then PATH)."""
    if java is None:
        home = os.environ.get("JAVA_HOME")
        java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise JavaError(
            f"Java not found (JAVA_HOME={os.environ.get('JAVA_HOME')!r}, no 'java' on PATH): "
            f"Spark needs Java {MIN_JAVA_MAJOR}+, e.g. `apt-get install openjdk-17-jre-headless`"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise JavaError(f"could not read the Java version from `{java} -version`: {out.stderr.strip()[:200]}")
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 else major


def check_java() -> None:
    """Fail with one clear line instead of a Py4J stack trace when Java is missing or too old."""
    major = java_major_version()
    if major < MIN_JAVA_MAJOR:
        raise JavaError(f"Java {major} found, Spark 4 needs Java {MIN_JAVA_MAJOR}+ (set JAVA_HOME to a newer JDK)")


def build_session(profile: Profile, app_name: str = "mfspark") -> SparkSession:
    """Create (or reuse) the SparkSession for a profile and set the checkpoint directory.

    The checkpoint dir always comes from the profile, so ALS checkpointing is never
    silently skipped for want of one.
    """
    check_java()
    from pyspark.sql import SparkSession

    local_dir = profile.spark.get("spark.local.dir")
    if local_dir and "://" not in local_dir:
        Path(local_dir).mkdir(parents=True, exist_ok=True)
    builder = SparkSession.builder.appName(app_name)
    if profile.spark.get("spark.master", "").startswith("local"):
        # Local workers must run this interpreter (the venv), not whatever `python3` is on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in profile.spark.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    spark.sparkContext.setCheckpointDir(profile.checkpoint_dir)
    log.info("Spark %s session '%s' (profile %s, master %s)", spark.version, app_name, profile.name,
             spark.sparkContext.master)
    return spark
