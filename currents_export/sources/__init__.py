"""Where objects come from: local files (S3 comes later), behind one small shape."""

from currents_export.sources.base import SourceObject
from currents_export.sources.local import find_local_objects

__all__ = ["SourceObject", "find_local_objects"]
