"""nnprep: fetch, convert and verify the models nnhost serves (see models/prepare.py)."""

# Bump when a converter or the output layout changes, so cached outputs are rebuilt.
TOOL_VERSION = 1
