"""HTML pages read back as tables: tests name columns, not positions."""

from __future__ import annotations

from html.parser import HTMLParser

__all__ = ["Tables", "records"]


class Tables(HTMLParser):
    """Every <table> as rows of (row class, [cell text]); the <h3> heading before each table."""

    def __init__(self, text: str):
        super().__init__()
        self.tables, self.headings, self._cell, self._row, self._heading = [], [], None, None, None
        self._last_heading = ""
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
            self.headings.append(self._last_heading)
        elif tag == "tr":
            self._row = (dict(attrs).get("class", ""), [])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")
        elif tag == "h3":
            self._heading = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row[1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr":
            self.tables[-1].append(self._row)
        elif tag == "h3":
            self._last_heading, self._heading = "".join(self._heading), None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._heading is not None:
            self._heading.append(data)

    def find(self, first_header: str, heading: str | None = None) -> list[list]:
        return [t for t, h in zip(self.tables, self.headings)
                if t and t[0][1] and t[0][1][0] == first_header and (heading is None or h == heading)]

    def with_columns(self, *headers: str) -> list[tuple[str, dict]]:
        """The rows of the one table that has all these column headers, each as (row class, {header: cell})."""
        (found,) = [t for t in self.tables if t and set(headers) <= set(t[0][1])]
        return records(found)


def records(table: list) -> list[tuple[str, dict]]:
    """A parsed table's body rows as (row class, {column header: cell text}): tests name columns, not positions."""
    header = table[0][1]
    return [(cls, dict(zip(header, cells))) for cls, cells in table[1:]]
