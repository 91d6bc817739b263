"""Data loss prevention: validated detectors, text extraction from parts, and profiles.

`validators` (check digits), `detectors` (pattern + validator + context), `extract` (text from
text/HTML/CSV/OOXML/PDF parts), `profiles` (thresholds and actions, the scan of a message).
"""
