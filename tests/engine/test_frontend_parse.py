"""Frontend, parse and preprocess: syntax errors with positions, cpp, unsupported markers with lines."""

from __future__ import annotations
