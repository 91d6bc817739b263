"""Client-controlled text made safe to print, log or write into a comment: one visible line.

A zip member name, a header value or a SASL login can hold a newline (a forged line in a
generated config or a log), an ESC sequence or a backspace (rewriting a sysadmin's terminal) or
a bidi override such as U+202E (text that displays in another order than it reads, "Trojan
Source"). `printable` writes each such character as a visible escape (`\\n`, `\\x1b`,
`\\u202e`); the backslash itself becomes `\\\\`, so the result reads back unambiguously.
"""

from __future__ import annotations

import re

# Tab and newline too: the result is one line. Lone surrogates are undecodable bytes kept by
# surrogateescape (envelope addresses); no terminal or file encoding can write them.
_UNSAFE_CHARS = (
    "\x00-\x1f\x7f-\x9f"  # C0, DEL, C1
    "\u2028\u2029"  # line and paragraph separators
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"  # bidi marks, embeddings, overrides, isolates
    "\ud800-\udfff"  # lone surrogates
)
UNSAFE = re.compile(f"[{_UNSAFE_CHARS}]")
_UNSAFE_OR_BACKSLASH = re.compile(f"[{_UNSAFE_CHARS}\\\\]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def printable(text: str) -> str:
    """`text` on one line with every unsafe character (see UNSAFE) and the backslash escaped."""
    return _UNSAFE_OR_BACKSLASH.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"
