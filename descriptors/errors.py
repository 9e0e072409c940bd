"""The one error type of the descriptors package: a descriptor file, class list or name that cannot be used.

Its message is one line that names the input; the CLI and the app show it
as it is. Nothing else lives here, so every module of the package can
raise it without importing another.
"""

from __future__ import annotations


class DescriptorError(ValueError):
    """A descriptor file or a class list that cannot be used; the message is one line."""
