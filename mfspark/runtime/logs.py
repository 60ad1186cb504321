"""How loud Spark is on the console, given mfspark's `--log-level`: errors only, everything at DEBUG."""

from __future__ import annotations

from pathlib import Path

LOG4J2_PROPERTIES = Path(__file__).with_name("log4j2.properties")


def spark_console_level(level: str) -> str:
    """Spark's log4j level for mfspark's `level`: Spark's INFO/WARN chatter only when debugging."""
    return "INFO" if level.upper() == "DEBUG" else "ERROR"


def with_console_logging(spark_conf: dict[str, str], level: str) -> dict[str, str]:
    """`spark_conf` plus driver JVM options loading mfspark's log4j2 config at `level` (only read when the JVM
    starts, so the start-up warnings are quiet too); a profile naming its own log4j2 config keeps it."""
    options = spark_conf.get("spark.driver.extraJavaOptions", "")
    if "log4j2.configurationFile" in options:
        return spark_conf
    ours = (f"-Dlog4j2.configurationFile={LOG4J2_PROPERTIES.as_uri()} "
            f"-Dmfspark.spark.log.level={spark_console_level(level)}")
    return {**spark_conf, "spark.driver.extraJavaOptions": f"{options} {ours}".strip()}
