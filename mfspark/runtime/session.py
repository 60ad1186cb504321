"""SparkSession construction from a profile (`<profile>.toml`) plus command-line overrides.

Profiles ship inside the package (`mfspark/runtime/profiles`, a link to the repository's
`conf/`), so an installed wheel and a `--py-files` zip find them wherever the job runs; a
directory given with `--conf-dir`, `$MFSPARK_CONF_DIR` or `./conf` overrides them by name.
Nothing here runs at import time: a session exists only once a job asks for one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import tomllib

from mfspark.errors import ConfigError, JavaError
from mfspark.runtime.logs import spark_console_level, with_console_logging
from mfspark.runtime.spark_internals import check_classic, quiet_accumulator_server_when_the_jvm_dies

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

MIN_JAVA_MAJOR = 17
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Package data: where a profile is found when no override directory holds it.
PACKAGED_PROFILES = ("mfspark.runtime", "profiles")


@dataclass(frozen=True)
class Profile:
    """A resolved configuration profile: Spark settings and mfspark's own settings."""

    name: str
    spark: dict[str, str]
    checkpoint_dir: str
    log_level: str = "INFO"
    source: str = ""  # the file it was read from


# The `[mfspark]` keys a profile or `--conf` may set: the Profile fields that are settings.
MFSPARK_SETTINGS = tuple(f.name for f in fields(Profile) if f.name not in ("name", "spark", "source"))


def conf_dirs(conf_dir: str | os.PathLike | None = None) -> list[Path]:
    """Directories whose `<name>.toml` overrides the packaged profile, first match wins."""
    candidates = [Path(conf_dir)] if conf_dir else []
    if os.environ.get("MFSPARK_CONF_DIR"):
        candidates.append(Path(os.environ["MFSPARK_CONF_DIR"]))
    candidates.append(Path.cwd() / "conf")
    return candidates


def profile_text(name: str, conf_dir: str | os.PathLike | None = None) -> tuple[str, str]:
    """(TOML text, where it came from) of profile `name`: the first override directory holding
    `<name>.toml`, else the package's copy (read through importlib.resources, so it works from
    a wheel, an editable install or a zip on `sys.path`)."""
    dirs = conf_dirs(conf_dir)
    for directory in dirs:
        path = directory / f"{name}.toml"
        if path.is_file():
            return path.read_text(encoding="utf-8"), str(path)
    packaged = resources.files(PACKAGED_PROFILES[0]).joinpath(PACKAGED_PROFILES[1], f"{name}.toml")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8"), f"{packaged} (packaged)"
    raise ConfigError(f"profile '{name}' not found: looked for {name}.toml in {', '.join(map(str, dirs))} "
                      f"and among the packaged profiles ({', '.join(packaged_profiles()) or 'none'})")


def packaged_profiles() -> list[str]:
    """Names of the profiles shipped with the package."""
    directory = resources.files(PACKAGED_PROFILES[0]).joinpath(PACKAGED_PROFILES[1])
    if not directory.is_dir():
        return []
    return sorted(entry.name.removesuffix(".toml") for entry in directory.iterdir() if entry.name.endswith(".toml"))


def load_profile(
    name: str = "local",
    output_root: str | os.PathLike = "out",
    overrides: dict[str, str] | None = None,
    conf_dir: str | os.PathLike | None = None,
) -> Profile:
    """Read profile `name` (see `profile_text`), substitute `{output_root}`, apply `key=value` overrides.

    Overrides whose key starts with `spark.` go to Spark; others set mfspark settings
    (`MFSPARK_SETTINGS`). An unknown mfspark key or table is an error, not silently kept.
    """
    text, source = profile_text(name, conf_dir)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from exc
    unknown_tables = sorted(set(raw) - {"spark", "mfspark", "pipeline"})  # [pipeline]: commands/pipeline.py
    if unknown_tables:
        raise ConfigError(f"{source}: unknown table [{unknown_tables[0]}] (a profile has [spark], [mfspark] "
                          "and [pipeline])")
    root = str(Path(output_root).resolve()) if "://" not in str(output_root) else str(output_root)
    # Spark's scratch space must be on this machine's disk: beside a local output, else in the temp directory, one
    # directory per output root (jobs writing different roots never share one).
    local_root = root if "://" not in root else \
        str(Path(tempfile.gettempdir()) / "mfspark" / hashlib.sha256(root.encode()).hexdigest()[:12])

    def fill(value: object, key: str = "") -> str:
        return str(value).replace("{output_root}", local_root if key == "spark.local.dir" else root)

    spark = {k: fill(v, k) for k, v in raw.get("spark", {}).items()}
    own = {k: fill(v) for k, v in raw.get("mfspark", {}).items()}
    _check_settings(own, f"{source} [mfspark]")
    for key, value in (overrides or {}).items():
        if not key.startswith("spark."):
            _check_settings({key: value}, f"--conf {key}={value}")
        (spark if key.startswith("spark.") else own)[key] = fill(value, key)
    return Profile(
        name=name,
        spark=spark,
        checkpoint_dir=own.get("checkpoint_dir", f"{root}/_checkpoints"),
        log_level=own.get("log_level", "INFO").upper(),
        source=source,
    )


def _check_settings(settings: dict[str, str], where: str) -> None:
    """Refuse an mfspark key the code does not read (a typo would otherwise be silently ignored)."""
    for key, value in settings.items():
        if key not in MFSPARK_SETTINGS:
            raise ConfigError(f"{where}: unknown mfspark setting '{key}' (allowed: {', '.join(MFSPARK_SETTINGS)}; "
                              "Spark settings start with 'spark.')")
        if key == "log_level" and str(value).upper() not in LOG_LEVELS:
            raise ConfigError(f"{where}: log_level '{value}' is not one of {', '.join(LOG_LEVELS)}")


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
    for key, value in with_console_logging(profile.spark, profile.log_level).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    check_classic(spark)
    quiet_accumulator_server_when_the_jvm_dies(spark)
    spark.sparkContext.setLogLevel(spark_console_level(profile.log_level))
    spark.sparkContext.setCheckpointDir(profile.checkpoint_dir)
    log.info("Spark %s session '%s' (profile %s from %s, master %s)", spark.version, app_name, profile.name,
             profile.source, spark.sparkContext.master)
    return spark
