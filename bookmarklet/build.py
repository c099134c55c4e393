"""Build the stats bookmarklet from ``overlay.js``: strip comments and whitespace, wrap it in an IIFE.

Run ``python bookmarklet/build.py`` after editing ``overlay.js``: it writes the minified code into the
package (``instrumented/templates/instrumented/dashboard/bookmarklet.min.js``, shipped as package data
and committed, so ``pip install .``, ``pip install -e .`` and a checkout all have it without Node).
``--check`` exits 1 when the committed output is stale (the test suite runs the same comparison).
The dashboard substitutes its mount path and percent-encodes when it serves the link.

The minifier is a small tokenizer, safe for the subset ``overlay.js`` is written in: it keeps string
literals intact and refuses regex and template literals rather than risk mangling them; the source
must not rely on automatic semicolon insertion, since line breaks are removed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "bookmarklet" / "overlay.js"
OUTPUT = ROOT / "instrumented" / "templates" / "instrumented" / "dashboard" / "bookmarklet.min.js"

_IDENT = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$")
# After these characters a '/' would start a regex literal, not a division.
_REGEX_CONTEXT = set("(,=:[!&|?{};+-*%<>~^")


class MinifyError(ValueError):
    """The source uses a construct the minifier does not handle safely."""


def _line(source: str, index: int) -> int:
    return source.count("\n", 0, index) + 1


def minify(source: str) -> str:
    """Remove comments and every whitespace run that is not needed to keep two tokens apart."""
    out: list[str] = []
    pending_space = False
    i, n = 0, len(source)

    def last() -> str:
        return out[-1][-1] if out else ""

    def emit(token: str) -> None:
        nonlocal pending_space
        prev = last()
        first = token[0]
        if pending_space and prev and ((prev in _IDENT and first in _IDENT) or (prev == first and prev in "+-")):
            out.append(" ")
        pending_space = False
        out.append(token)

    while i < n:
        c = source[i]
        if source.startswith("/*", i):
            end = source.find("*/", i + 2)
            if end < 0:
                raise MinifyError(f"unterminated comment at line {_line(source, i)}")
            i = end + 2
            pending_space = True
        elif source.startswith("//", i):
            end = source.find("\n", i)
            i = n if end < 0 else end
            pending_space = True
        elif c.isspace():
            i += 1
            pending_space = True
        elif c in "'\"":
            j = i + 1
            while j < n and source[j] != c:
                if source[j] == "\n":
                    raise MinifyError(f"line break in a string at line {_line(source, i)}")
                j += 2 if source[j] == "\\" else 1
            if j >= n:
                raise MinifyError(f"unterminated string at line {_line(source, i)}")
            emit(source[i : j + 1])
            i = j + 1
        elif c == "`":
            raise MinifyError(f"template literal at line {_line(source, i)}: use string concatenation")
        elif c == "/" and (not out or last() in _REGEX_CONTEXT):
            raise MinifyError(f"regex literal at line {_line(source, i)}: not supported by this minifier")
        else:
            emit(c)
            i += 1
    return "".join(out)


def build(source: str) -> str:
    """The bookmarklet's code: the minified source inside an IIFE, whose value is undefined (the page stays)."""
    return "(()=>{" + minify(source) + "})()"


def main(argv: list[str] | None = None) -> int:
    """Write (or ``--check``) the built code and report its size as a javascript: URL."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the built file is out of date")
    args = parser.parse_args(argv)
    code = build(SOURCE.read_text(encoding="utf-8"))
    sys.path.insert(0, str(ROOT))
    from instrumented.dashboard.bookmarklet import bake, encode

    size = len(encode(bake(code, "/instrumented/")))
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8").strip() if OUTPUT.exists() else ""
        if current != code:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date: run python bookmarklet/build.py", file=sys.stderr)
            return 1
        print(f"up to date; javascript: URL is {size} characters")
        return 0
    OUTPUT.write_text(code + "\n", encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}: {len(code)} characters of code, {size}-character javascript: URL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
