"""The error raised for a video that cannot be read (its own module, so that the file and frame-folder readers
both raise it without importing each other)."""


class VideoError(RuntimeError):
    """A video that cannot be opened or decoded; the message names the file (and frame) and what to do."""
