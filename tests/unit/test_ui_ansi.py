"""The ANSI SGR → HTML converter of the logs page: classes, never styles; escaped; tolerant."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.ui import ansi
from agent.ui.ansi import AnsiHtml, Pen, apply_sgr, nearest, to_html

E = "\x1b"


@pytest.mark.parametrize(("text", "html"), [
    ("plain", "plain"),
    ("<script>&", "&lt;script&gt;&amp;"),
    (f"{E}[31mred{E}[0m after", '<span class="ansi-fg-1">red</span> after'),
    (f"{E}[1;32mok{E}[m", '<span class="ansi-bold ansi-fg-2">ok</span>'),
    (f"{E}[91;104mbright", '<span class="ansi-fg-9 ansi-bg-12">bright</span>'),
    (f"{E}[38;5;208mfg{E}[48;5;17mbg", '<span class="ansi-fg-208">fg</span><span class="ansi-fg-208 ansi-bg-17">bg'
                                        "</span>"),
    (f"{E}[38;2;255;0;0mtrue", '<span class="ansi-fg-196">true</span>'),
    (f"{E}[38:2::0:0:255mcolon", '<span class="ansi-fg-21">colon</span>'),
    (f"{E}[4mu{E}[24mn", '<span class="ansi-underline">u</span>n'),
    (f"{E}[1;2mx{E}[22my", '<span class="ansi-bold ansi-dim">x</span>y'),
    (f"{E}[31mr{E}[39md", '<span class="ansi-fg-1">r</span>d'),
    (f"{E}[7;31;42minv", '<span class="ansi-inverse ansi-fg-2 ansi-bg-1">inv</span>'),
    (f"{E}[7mdefault", '<span class="ansi-inverse">default</span>'),
    # what is not SGR is dropped, never shown
    (f"a{E}[2Kb{E}[10;20Hc", "abc"),
    (f"{E}]0;window title\x07x", "x"),
    (f"{E}]8;;http://x{E}\\link{E}]8;;{E}\\", "link"),
    (f"{E}(Bx{E}7y", "xy"),
    ("a\r\nb\rc\x07\x08d\te", "a\nbcd\te"),
    # broken or unknown parameters are skipped, the rest applies
    (f"{E}[99;31mx", '<span class="ansi-fg-1">x</span>'),
    (f"{E}[38;5mx", "x"),
    (f"{E}[38;5;999;1mx", '<span class="ansi-bold">x</span>'),
    (f"{E}[38;2;1mx", "x"),
    (f"{E}[31;<mx", "x"),
    (f"{E}[31;xmx", "mx"),  # x is a final byte (ECMA-48): the sequence is ESC [ 3 1 ; x
    (f"{E}[31m{E}[0m", ""),
    (f"{E}[31ma{E}[1m{E}[22mb", '<span class="ansi-fg-1">ab</span>'),
    (f'{E}[31m"quoted\'', '<span class="ansi-fg-1">"quoted\'</span>'),
])
def test_sgr_to_html(text: str, html: str) -> None:
    assert to_html(text) == html


def test_no_style_attribute_ever() -> None:
    every = "".join(f"{E}[{a};{b}mx" for a in range(0, 110) for b in (1, 5, 2))
    assert "style=" not in to_html(every + f"{E}[38;2;10;20;30mz")


def test_the_pen_and_a_cut_sequence_carry_over_chunks() -> None:
    conv = AnsiHtml()
    assert conv.feed(f"{E}[3") == ""
    assert conv.feed("2mgreen\nline") == '<span class="ansi-fg-2">green\nline</span>'
    assert conv.feed(" two") == '<span class="ansi-fg-2"> two</span>'
    assert conv.feed(f"{E}") == ""
    assert conv.feed("[0mplain") == "plain"
    assert conv.feed(f"{E}]0;tit") == ""
    assert conv.feed("le\x07after") == "after"


def test_a_sequence_that_never_ends_is_dropped_not_kept_forever() -> None:
    conv = AnsiHtml()
    assert conv.feed(f"{E}[" + "1" * (ansi.MAX_SEQUENCE + 10) + "text") .endswith("text")
    assert conv.feed("ok") == "ok"
    conv = AnsiHtml()
    out = conv.feed(f"{E}]" + "x" * (ansi.MAX_SEQUENCE * 2))
    assert out == "x" * (ansi.MAX_SEQUENCE * 2 + 2 - ansi.MAX_SEQUENCE)
    assert conv.feed("after") == "after"


def test_flush_drops_a_cut_sequence() -> None:
    conv = AnsiHtml()
    conv.feed(f"x{E}[3")
    assert conv.flush() == ""
    assert conv.feed("1m") == "1m"


@pytest.mark.parametrize(("rgb", "index"), [
    ((0, 0, 0), 16), ((255, 255, 255), 231), ((255, 0, 0), 196), ((0, 255, 0), 46), ((0, 0, 255), 21),
    ((128, 128, 128), 244), ((8, 8, 8), 232), ((238, 238, 238), 255), ((95, 135, 175), 67),
])
def test_nearest_palette_colour(rgb: tuple[int, int, int], index: int) -> None:
    assert nearest(*rgb) == index


def test_apply_sgr_from_a_pen() -> None:
    pen = apply_sgr(Pen(), "1;31")
    assert pen == Pen(1, None, frozenset({"bold"}))
    assert apply_sgr(pen, "") == Pen()
    assert apply_sgr(pen, "0") == Pen()


def test_the_stylesheet_has_every_class_and_is_the_shipped_one() -> None:
    css = ansi.stylesheet()
    for i in (0, 15, 16, 231, 232, 255):
        assert f".ansi-fg-{i}{{" in css and f".ansi-bg-{i}{{" in css
    for style in ansi.STYLES:
        assert f".ansi-{style}{{" in css
    shipped = Path(ansi.__file__).parent / "static" / "ansi.css"
    assert shipped.read_text() == css, "agent/ui/static/ansi.css is stale: write ansi.stylesheet() into it"
