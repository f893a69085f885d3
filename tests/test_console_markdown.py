"""Plant data and times shown through Streamlit Markdown stay plain text (inspection.console.widgets)."""

from __future__ import annotations

from inspection.console.widgets import markdown_table, markdown_text


def test_markdown_text_escapes_markup_and_shortcodes_and_keeps_one_line() -> None:
    assert markdown_text("2026-12-02 11:06:40 UTC") == "2026-12-02 11\\:06\\:40 UTC"  # not an :emoji:
    assert markdown_text("*bold* [link](x) <b>|a|</b> $x$ ~s~ `c` \\") == (
        "\\*bold\\* \\[link\\](x) \\<b\\>\\|a\\|\\</b\\> \\$x\\$ \\~s\\~ \\`c\\` \\\\")
    assert markdown_text("line one\nline  two\t3") == "line one line two 3"
    assert markdown_text(6.02) == "6.02"


def test_markdown_table_has_a_header_and_one_escaped_row_per_field() -> None:
    table = markdown_table([("Customer", "A|B Steel"), ("Produced", "2026-11-23T06:00:04")])
    assert table.splitlines() == ["| Field | Value |", "| --- | --- |", "| Customer | A\\|B Steel |",
                                  "| Produced | 2026-11-23T06\\:00\\:04 |"]


def test_markdown_table_puts_fields_side_by_side_in_reading_order() -> None:
    table = markdown_table([("Order", 1), ("Customer", "Iberia"), ("Heat", 2)], fields_per_row=2)
    assert table.splitlines() == ["| Field | Value | Field | Value |", "| --- | --- | --- | --- |",
                                  "| Order | 1 | Customer | Iberia |", "| Heat | 2 |  |  |"]
