"""The Taperfile: how it is found, loaded and validated, and the resolved machines.

Importing this package stays light: pydantic and YAML are loaded only to validate.
"""

from tapers.taperfile.load import LoadedTaperfile, find_taperfile, load_taperfile
from tapers.taperfile.machine import Machine

__all__ = ["LoadedTaperfile", "Machine", "find_taperfile", "load_taperfile"]
