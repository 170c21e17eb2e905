"""The Taperfile: its model, how it is found and loaded, and resolved machines."""

from tapers.taperfile.load import LoadedTaperfile, find_taperfile, load_taperfile
from tapers.taperfile.model import Machine, Taperfile

__all__ = ["LoadedTaperfile", "Machine", "Taperfile", "find_taperfile", "load_taperfile"]
