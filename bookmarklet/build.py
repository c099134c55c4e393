"""Build the stats bookmarklet from ``overlay.js``: strip comments and whitespace, wrap it in an IIFE.

Run ``python bookmarklet/build.py`` after editing ``overlay.js``: it writes the minified code into the
package (``instrumented/templates/instrumented/dashboard/bookmarklet.min.js``, shipped as package data
and committed, so ``pip install .``, ``pip install -e .`` and a checkout all have it without Node).
``--check`` exits 1 when the committed output is stale (the test suite runs the same comparison).
The dashboard substitutes its mount path and percent-encodes when it serves the link.

The minifier is a small tokenizer, safe for the subset ``overlay.js`` is written in: it keeps string
literals intact (joining ``'a' + 'b'``), gives local names (``const``, arrow parameters, ``catch``)
the shortest unused names, and refuses what it cannot handle safely (regex and template literals,
``function``, destructuring, shorthand properties) rather than risk mangling it. The source must not
rely on automatic semicolon insertion, since line breaks are removed.
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


Token = tuple[str, bool]  # (text, whitespace or a comment came before it)

#: Words never used as new names (single letters are never keywords, two-letter ones can be).
_RESERVED = {"do", "if", "in", "of", "as", "is"}


def _is_word(text: str) -> bool:
    return text[0] in _IDENT and not text[0].isdigit()


def tokenize(source: str) -> list[Token]:
    """Words (identifiers, keywords, numbers), string literals and one-character punctuators; comments dropped."""
    tokens: list[Token] = []
    spaced = False
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if source.startswith("/*", i):
            end = source.find("*/", i + 2)
            if end < 0:
                raise MinifyError(f"unterminated comment at line {_line(source, i)}")
            i, spaced = end + 2, True
        elif source.startswith("//", i):
            end = source.find("\n", i)
            i, spaced = (n if end < 0 else end), True
        elif c.isspace():
            i, spaced = i + 1, True
        elif c in "'\"":
            j = i + 1
            while j < n and source[j] != c:
                if source[j] == "\n":
                    raise MinifyError(f"line break in a string at line {_line(source, i)}")
                j += 2 if source[j] == "\\" else 1
            if j >= n:
                raise MinifyError(f"unterminated string at line {_line(source, i)}")
            tokens.append((source[i : j + 1], spaced))
            i, spaced = j + 1, False
        elif c == "`":
            raise MinifyError(f"template literal at line {_line(source, i)}: use string concatenation")
        elif c == "/" and (not tokens or tokens[-1][0][-1] in _REGEX_CONTEXT):
            raise MinifyError(f"regex literal at line {_line(source, i)}: not supported by this minifier")
        elif c in _IDENT:
            j = i
            while j < n and source[j] in _IDENT:
                j += 1
            tokens.append((source[i:j], spaced))
            i, spaced = j, False
        else:
            tokens.append((c, spaced))
            i, spaced = i + 1, False
    return tokens


def fold_strings(tokens: list[Token]) -> list[Token]:
    """``'a' + 'b'`` → ``'ab'`` where no operator binding tighter than ``+`` touches either literal."""
    out: list[Token] = []
    i = 0
    while i < len(tokens):
        text, spaced = tokens[i]
        while (
            text[0] in "'\""
            and i + 2 < len(tokens)
            and tokens[i + 1][0] == "+"
            and tokens[i + 2][0][0] == text[0]
            and (not out or out[-1][0] not in (".", "*", "/", "%", "-", "!", "~"))
            and (i + 3 >= len(tokens) or tokens[i + 3][0] not in (".", "[", "(", "*", "/", "%"))
        ):
            text = text[:-1] + tokens[i + 2][0][1:]
            i += 2
        out.append((text, spaced))
        i += 1
    return out


def _declared(texts: list[str]) -> set[str]:
    """Names bound by ``const``/``let``/``var``, arrow-function parameters and ``catch (e)``."""
    names: set[str] = set()
    for i, t in enumerate(texts):
        if t == "function":
            raise MinifyError("use arrow functions: the renamer does not handle 'function'")
        if t in ("const", "let", "var"):
            depth, expect = 0, True
            for tj in texts[i + 1 :]:
                if expect:
                    if not _is_word(tj):
                        raise MinifyError(f"destructuring after {t!r} is not supported")
                    names.add(tj)
                    expect = False
                elif tj in "([{":
                    depth += 1
                elif tj in ")]}":
                    depth -= 1
                    if depth < 0:
                        break
                elif depth == 0 and tj == ",":
                    expect = True
                elif depth == 0 and tj == ";":
                    break
        elif t == "catch" and texts[i + 1 : i + 2] == ["("] and _is_word(texts[i + 2]):
            names.add(texts[i + 2])
        elif t == "=" and texts[i + 1 : i + 2] == [">"]:
            if _is_word(texts[i - 1]):
                names.add(texts[i - 1])
            elif texts[i - 1] == ")":
                j = i - 2
                while texts[j] != "(":
                    if not (_is_word(texts[j]) or texts[j] == ","):
                        raise MinifyError("arrow parameters must be plain names")
                    if _is_word(texts[j]):
                        names.add(texts[j])
                    j -= 1
    return names


def rename(tokens: list[Token]) -> list[Token]:
    """Give declared names the shortest names unused in the code; property names and object keys stay."""
    texts = [t for t, _ in tokens]
    declared = _declared(texts)
    # Which occurrences are the variable (not a property after '.', not an object key): mark them once.
    stack: list[str] = []
    variable = [False] * len(texts)
    for i, t in enumerate(texts):
        prev = texts[i - 1] if i else ""
        nxt = texts[i + 1] if i + 1 < len(texts) else ""
        if t == "{":
            stack.append("object" if prev in ("(", ",", "=", ":", "[", "?", "|", "&", "return") else "block")
        elif t in "([":
            stack.append(t)
        elif t in ")]}" and stack:
            stack.pop()
        elif t in declared and prev != ".":
            in_object = bool(stack) and stack[-1] == "object" and prev in ("{", ",")
            if in_object and nxt == ":":
                continue  # an object key
            if in_object and nxt in ("}", ","):
                raise MinifyError(f"shorthand property {t!r}: write {t}: {t}")
            variable[i] = True
    counts: dict[str, int] = {}
    for t, is_var in zip(texts, variable, strict=True):
        if is_var:
            counts[t] = counts.get(t, 0) + 1
    taken = {t for t in texts if _is_word(t)} | _RESERVED
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    names = [*letters, *(a + b for a in letters for b in letters + "0123456789_$")]
    fresh = (name for name in names if name not in taken)
    mapping: dict[str, str] = {}
    for name in sorted(counts, key=lambda k: (-counts[k] * len(k), k)):
        if len(name) > 1:
            candidate = next(fresh)
            if len(candidate) < len(name):
                mapping[name] = candidate
    return [(mapping.get(t, t) if is_var else t, spaced) for (t, spaced), is_var in zip(tokens, variable, strict=True)]


def join(tokens: list[Token]) -> str:
    """Concatenate, keeping one space only where two tokens would otherwise merge (``a b``, ``a+ +b``)."""
    out: list[str] = []
    for text, spaced in tokens:
        prev = out[-1][-1] if out else ""
        first = text[0]
        if prev and ((prev in _IDENT and first in _IDENT) or (spaced and prev == first and prev in "+-")):
            out.append(" ")
        out.append(text)
    return "".join(out)


def unparen_arrows(tokens: list[Token]) -> list[Token]:
    """``(x) => ...`` → ``x => ...`` (one plain parameter needs no parentheses)."""
    out: list[Token] = []
    i = 0
    while i < len(tokens):
        window = [t for t, _ in tokens[i : i + 5]]
        if len(window) == 5 and window[0] == "(" and _is_word(window[1]) and window[2:] == [")", "=", ">"]:
            if not tokens[i + 4][1]:  # '=>' written together
                out.append((window[1], tokens[i][1]))
                i += 3
                continue
        out.append(tokens[i])
        i += 1
    return out


def minify(source: str, *, rename_names: bool = True) -> str:
    """Strip comments and whitespace, fold string literals, shorten local names."""
    tokens = fold_strings(tokenize(source))
    return join(unparen_arrows(rename(tokens) if rename_names else tokens))


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
