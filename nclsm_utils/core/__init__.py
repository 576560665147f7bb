"""The core every other layer stands on: errors (one ``NclsmError`` base), atomic I/O, the
dataset (roles, sections, splits, checks), the work directory (every path under it), run
manifests and the real figure panel. Nothing here imports another part of the package."""
