"""Errors a job reports as one clear line (the CLI prints them and exits non-zero)."""


class MfsparkError(Exception):
    """Base class: anything the user can fix from the message alone."""


class ConfigError(MfsparkError):
    """A profile, option or argument is wrong."""


class JavaError(MfsparkError):
    """Java is missing or too old for Spark."""


class InputError(MfsparkError):
    """An input file is missing, empty, unrecognised or malformed (the message names file, line, field)."""


class RejectThresholdError(MfsparkError):
    """Too many input rows were rejected; nothing was committed."""


class DownloadError(MfsparkError):
    """A dataset could not be downloaded or failed its checksum."""


class OutputLockedError(MfsparkError):
    """Another running job holds the output's lock (the message names its host, pid and start time)."""


class PipelineStageError(MfsparkError):
    """A pipeline stage failed (the message names the stage and the cause)."""


class SparkJvmDiedError(MfsparkError):
    """The Spark driver JVM exited under the command (killed, or out of memory): the message names what was running."""


class NoSpaceLeftError(MfsparkError):
    """A write failed on a full disk (the message names the path written)."""
