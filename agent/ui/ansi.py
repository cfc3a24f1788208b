"""ANSI SGR escape sequences to HTML, for container logs in the browser (pure).

Colours and styles become CSS classes, never ``style`` attributes: the UI's Content-Security-Policy
forbids inline styles. The classes are ``ansi-fg-N`` / ``ansi-bg-N`` for the 256-colour palette
(0-7 the standard colours, 8-15 the bright ones, 16-231 the 6×6×6 cube, 232-255 the greys; a 24-bit
colour is shown as the nearest of those), ``ansi-bold``, ``ansi-dim``, ``ansi-italic``,
``ansi-underline``, ``ansi-strike``, ``ansi-blink`` and ``ansi-inverse`` (with the colours swapped);
:func:`stylesheet` writes the rules for all of them (``agent/ui/static/ansi.css`` is its output, a
test keeps the two equal).

Why not ``ansi2html`` (PyPI): it writes 24-bit colours as inline styles (blocked by the CSP), it
converts a whole text at once, while a followed log arrives in chunks whose escape sequences and
colours run across chunk and line boundaries, and it is LGPL-3.0 where Corral is Apache-2.0.

Tolerant by design: a sequence cut at the end of a chunk is kept for the next one; cursor movement,
erase, OSC (titles, hyperlinks) and other escapes are dropped, never shown as text; a sequence that
never ends is dropped after :data:`MAX_SEQUENCE` characters; unknown SGR codes are ignored; text is
always HTML-escaped. Each piece :meth:`AnsiHtml.feed` returns is balanced HTML (every span it opens
is closed), so pieces can be appended to a page one by one.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import re

ESC = "\x1b"
MAX_SEQUENCE = 256
"""Characters an escape sequence may take before it is judged broken and dropped."""
STYLES = ("bold", "dim", "italic", "underline", "blink", "inverse", "strike")
_SET = {1: "bold", 2: "dim", 3: "italic", 4: "underline", 5: "blink", 6: "blink", 7: "inverse", 9: "strike"}
_RESET = {21: ("bold",), 22: ("bold", "dim"), 23: ("italic",), 24: ("underline",), 25: ("blink",),
          27: ("inverse",), 29: ("strike",)}
_CSI_END = re.compile(r"[\x40-\x7e]")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1a\x1c-\x1f\x7f]")
"""C0 controls but tab, newline and escape (and DEL): dropped. A carriage return is kept out too."""
CUBE = (0, 95, 135, 175, 215, 255)
_SGR_PARAMS = re.compile(r"[0-9;:]*")


@dataclasses.dataclass(frozen=True)
class Pen:
    """What the text is drawn with now: a palette index or None (the terminal's default) for each."""

    fg: int | None = None
    bg: int | None = None
    styles: frozenset[str] = frozenset()

    def classes(self) -> str:
        return _classes(self)

    def _names(self) -> str:
        names = [f"ansi-{s}" for s in STYLES if s in self.styles]
        fg, bg = (self.bg, self.fg) if "inverse" in self.styles else (self.fg, self.bg)
        if fg is not None:
            names.append(f"ansi-fg-{fg}")
        if bg is not None:
            names.append(f"ansi-bg-{bg}")
        return " ".join(names)


@functools.lru_cache(maxsize=1024)
def _classes(pen: Pen) -> str:
    return pen._names()


@functools.lru_cache(maxsize=4096)
def nearest(r: int, g: int, b: int) -> int:
    """The palette index (16-255) nearest to a 24-bit colour, as xterm picks it."""

    def level(v: int) -> int:
        return min(range(6), key=lambda i: abs(CUBE[i] - v))

    ri, gi, bi = level(r), level(g), level(b)
    cube = 16 + 36 * ri + 6 * gi + bi
    cube_err = (CUBE[ri] - r) ** 2 + (CUBE[gi] - g) ** 2 + (CUBE[bi] - b) ** 2
    grey_i = min(23, max(0, round(((r + g + b) / 3 - 8) / 10)))
    grey = 8 + 10 * grey_i
    grey_err = (grey - r) ** 2 + (grey - g) ** 2 + (grey - b) ** 2
    return 232 + grey_i if grey_err < cube_err else cube


def _colour(codes: list[int], i: int) -> tuple[int | None, int]:
    """The colour of an extended code at ``codes[i]`` (38/48 already read): (index or None, codes used)."""
    if i < len(codes) and codes[i] == 5:
        if i + 1 < len(codes) and 0 <= codes[i + 1] <= 255:
            return codes[i + 1], 2
        return None, 2
    if i < len(codes) and codes[i] == 2:
        rgb = codes[i + 1:i + 4]
        if len(rgb) == 3 and all(0 <= v <= 255 for v in rgb):
            return nearest(*rgb), 4
        return None, 1 + len(rgb)
    return None, 1


def _number(part: str) -> int:
    return int(part) if part.isascii() and part.isdigit() and len(part) <= 3 else (0 if part == "" else -1)


def _codes(params: str) -> list[int]:
    """The codes of ``params``, a colon group (``38:2:CS:R:G:B``, ECMA-48's form) made like its
    semicolon form (``38;2;R;G;B``)."""
    codes: list[int] = []
    for group in (params or "0").split(";"):
        parts = [_number(p) for p in group.split(":")]
        if len(parts) == 6 and parts[0] in (38, 48) and parts[1] == 2:
            del parts[2]  # the colour space id
        codes += parts
    return codes


@functools.lru_cache(maxsize=4096)
def apply_sgr(pen: Pen, params: str) -> Pen:
    """The pen after ``ESC [ params m``; malformed parameters are skipped, never raised. Cached: a log
    repeats the same few sequences, and pens and parameters are immutable."""
    codes = _codes(params)
    fg, bg, styles = pen.fg, pen.bg, set(pen.styles)
    i = 0
    while i < len(codes):
        code = codes[i]
        i += 1
        if code == 0:
            fg, bg, styles = None, None, set()
        elif code in _SET:
            styles.add(_SET[code])
        elif code in _RESET:
            styles.difference_update(_RESET[code])
        elif 30 <= code <= 37:
            fg = code - 30
        elif 90 <= code <= 97:
            fg = code - 90 + 8
        elif 40 <= code <= 47:
            bg = code - 40
        elif 100 <= code <= 107:
            bg = code - 100 + 8
        elif code == 39:
            fg = None
        elif code == 49:
            bg = None
        elif code in (38, 48):
            value, used = _colour(codes, i)
            i += used
            if value is not None:
                if code == 38:
                    fg = value
                else:
                    bg = value
    return Pen(fg, bg, frozenset(styles))


class AnsiHtml:
    """A converter that keeps the pen and a cut sequence from one chunk to the next."""

    def __init__(self) -> None:
        self.pen = Pen()
        self._pending = ""

    def feed(self, text: str) -> str:
        """The HTML of ``text`` (balanced: every span opened is closed)."""
        text = self._pending + text
        self._pending = ""
        out: list[tuple[str, str]] = []
        i = 0
        while i < len(text):
            esc = text.find(ESC, i)
            if esc < 0:
                self._text(out, text[i:])
                break
            self._text(out, text[i:esc])
            end = self._sequence_end(text, esc)
            if end is None:  # cut: keep it for the next chunk, unless it is too long to be one
                if len(text) - esc <= MAX_SEQUENCE:
                    self._pending = text[esc:]
                break
            seq = text[esc:end]
            if seq.startswith(ESC + "[") and seq.endswith("m"):
                params = seq[2:-1]
                if _SGR_PARAMS.fullmatch(params):
                    self.pen = apply_sgr(self.pen, params)
            i = end
        merged: list[tuple[str, str]] = []
        for classes, piece in out:  # one span for a run of one pen, whatever escapes came between
            if merged and merged[-1][0] == classes:
                merged[-1] = (classes, merged[-1][1] + piece)
            else:
                merged.append((classes, piece))
        return "".join(f'<span class="{c}">{t}</span>' if c else t for c, t in merged)

    def flush(self) -> str:
        """What is left at the end of the stream (a cut sequence is dropped)."""
        self._pending = ""
        return ""

    @staticmethod
    def _sequence_end(text: str, esc: int) -> int | None:
        """The index just past the escape sequence at ``esc``; None when it is cut off."""
        if esc + 1 >= len(text):
            return None
        kind = text[esc + 1]
        if kind == "[":
            match = _CSI_END.search(text, esc + 2, esc + MAX_SEQUENCE)
            if match is None:
                return None if len(text) - esc < MAX_SEQUENCE else esc + MAX_SEQUENCE
            return match.end()
        if kind == "]":  # OSC: ends with BEL or ESC \
            bel, st = text.find("\x07", esc + 2), text.find(ESC + "\\", esc + 2)
            ends = [e + 1 for e in (bel,) if e >= 0] + [e + 2 for e in (st,) if e >= 0]
            if not ends:
                return None if len(text) - esc < MAX_SEQUENCE else esc + MAX_SEQUENCE
            return min(ends)
        if kind in "()#%":  # charset designations: ESC ( B
            return esc + 3 if esc + 2 < len(text) else None
        return esc + 2

    def _text(self, out: list[tuple[str, str]], text: str) -> None:
        text = _CONTROLS.sub("", text.replace("\r\n", "\n").replace("\r", ""))
        if text:
            out.append((self.pen.classes(), html.escape(text, quote=False)))


def to_html(text: str) -> str:
    """One whole text to HTML."""
    return AnsiHtml().feed(text)


def palette() -> list[tuple[int, int, int]]:
    """The 256 colours as (r, g, b): xterm's defaults."""
    base = [(0, 0, 0), (205, 49, 49), (13, 188, 121), (229, 229, 16), (36, 114, 200), (188, 63, 188),
            (17, 168, 205), (229, 229, 229), (102, 102, 102), (241, 76, 76), (35, 209, 139), (245, 245, 67),
            (59, 142, 234), (214, 112, 214), (41, 184, 219), (255, 255, 255)]
    cube = [(CUBE[r], CUBE[g], CUBE[b]) for r in range(6) for g in range(6) for b in range(6)]
    greys = [(8 + 10 * i, 8 + 10 * i, 8 + 10 * i) for i in range(24)]
    return base + cube + greys


def stylesheet() -> str:
    """The CSS for every class the converter writes."""
    lines = ["/* Generated by agent.ui.ansi.stylesheet(): the classes of ANSI colours in logs. */",
             ".ansi-bold{font-weight:bold}", ".ansi-dim{opacity:.7}", ".ansi-italic{font-style:italic}",
             ".ansi-underline{text-decoration:underline}", ".ansi-strike{text-decoration:line-through}",
             ".ansi-blink{text-decoration:underline dotted}",
             # inverse swaps the colours (classes() does it for set ones); these are the defaults swapped
             ".ansi-inverse{color:var(--ansi-bg,#111);background-color:var(--ansi-fg,#ddd)}"]
    for i, (r, g, b) in enumerate(palette()):
        lines.append(f".ansi-fg-{i}{{color:#{r:02x}{g:02x}{b:02x}}}")
        lines.append(f".ansi-bg-{i}{{background-color:#{r:02x}{g:02x}{b:02x}}}")
    return "\n".join(lines) + "\n"


__all__ = ["MAX_SEQUENCE", "AnsiHtml", "Pen", "apply_sgr", "nearest", "palette", "stylesheet", "to_html"]
