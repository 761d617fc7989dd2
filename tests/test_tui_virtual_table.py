"""VirtualTable on its own: what the operator sees and where the cursor goes, at 100,000 rows."""

from __future__ import annotations

import asyncio

from textual.app import App

from ari_console.tui.widgets.virtual_table import VirtualTable

COLUMNS = ("uid", "state")


def uid(i: int) -> str:
    return f"uid://A001/X{i:x}/X1"


def rows_of(n: int, state=lambda i: "failed" if i % 10 == 0 else "queued") -> dict[str, tuple[str, str]]:
    return {uid(i): (uid(i), state(i)) for i in range(n)}


class OneTable(App):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, object]] = []

    def compose(self):
        yield VirtualTable(COLUMNS, styles={"state": lambda s: "bold red" if s == "failed" else None}, id="t")

    def on_virtual_table_row_selected(self, event: VirtualTable.RowSelected) -> None:
        self.events.append(("selected", event.key))

    def on_virtual_table_header_selected(self, event: VirtualTable.HeaderSelected) -> None:
        self.events.append(("header", event.column))


def drive(steps, size=(60, 12)):
    """Run ``steps(app, table, pilot)`` in a headless app; its result."""
    async def run():
        app = OneTable()
        async with app.run_test(size=size) as pilot:
            table = app.query_one(VirtualTable)
            table.focus()
            return await steps(app, table, pilot)

    return asyncio.run(run())


def screen_text(table: VirtualTable) -> list[str]:
    return [table.render_line(y).text for y in range(table.size.height)]


def test_a_hundred_thousand_rows_show_the_header_and_the_first_rows_and_end_reaches_the_last():
    async def steps(app, table, pilot):
        table.sync(rows_of(100_000))
        await pilot.pause()
        first = screen_text(table)
        await pilot.press("end")
        await pilot.pause()
        return first, screen_text(table), table.selected_key

    first, last, selected = drive(steps)
    assert first[0].split() == ["uid", "state"]
    assert first[1].split() == [uid(0), "failed"] and first[2].split() == [uid(1), "queued"]
    assert last[0].split() == ["uid", "state"], "the header stays when the rows scroll"
    assert uid(99_999) in "".join(last) and selected == uid(99_999)


def test_cursor_stays_on_its_data_set_when_the_order_changes_and_moves_on_when_it_leaves():
    async def steps(app, table, pilot):
        rows = rows_of(1000)
        table.sync(rows)
        await pilot.pause()
        table.move_cursor(500)
        table.sync(dict(reversed(list(rows.items()))))
        await pilot.pause()
        after_reverse = (table.selected_key, table.cursor_row, uid(500) in "".join(screen_text(table)))
        table.sync({k: v for k, v in rows.items() if v[1] == "failed"})  # uid 500 is failed (500 % 10 == 0)
        kept = table.selected_key
        table.sync({k: v for k, v in rows.items() if v[1] == "queued"})
        return after_reverse, kept, table.selected_key, table.row_count

    (key, row, visible), kept, moved, count = drive(steps)
    assert (key, row, visible) == (uid(500), 499, True), "the cursor row scrolls into view"
    assert kept == uid(500)
    assert count == 900 and moved is not None and moved != uid(500)


def test_state_cells_are_coloured_except_under_the_cursor():
    async def steps(app, table, pilot):
        table.sync(rows_of(20))
        await pilot.pause()
        assert table.cursor_row == 0  # on uid 0, failed
        return table.render_line(1), table.render_line(2), table.render_line(11)

    cursor_failed, queued, failed = drive(steps)

    def style_of(strip, word):
        return next(seg.style for seg in strip if word in seg.text)

    assert style_of(failed, "failed").color.name == "red" and style_of(failed, "failed").bold
    assert style_of(queued, "queued").color is None or style_of(queued, "queued").color.name != "red"
    assert style_of(cursor_failed, "failed").color is None or style_of(cursor_failed, "failed").color.name != "red"


def test_a_click_on_the_cursor_row_selects_it_and_a_header_click_asks_to_sort_by_that_column():
    async def steps(app, table, pilot):
        table.sync(rows_of(50))
        await pilot.pause()
        await pilot.press("down", "down")
        await pilot.click(VirtualTable, offset=(3, 4))  # line 4: row 3, not the cursor's: moves it
        await pilot.click(VirtualTable, offset=(3, 4))  # again: selects it
        width = table.column_widths[0] + 2
        await pilot.click(VirtualTable, offset=(width + 2, 0))
        await pilot.pause()
        return app.events

    events = drive(steps)
    assert events == [("selected", uid(3)), ("header", "state")]


def test_columns_grow_to_the_widest_cell_and_never_shrink_on_a_narrower_refresh():
    async def steps(app, table, pilot):
        table.sync({"a": ("a-very-long-uid-of-thirty-cells", "ok")})
        wide = table.column_widths
        table.sync({"b": ("b", "ok")})
        await pilot.pause()
        return wide, table.column_widths, screen_text(table)[1]

    wide, after, line = drive(steps)
    assert wide[0] == len("a-very-long-uid-of-thirty-cells") and after == wide
    assert line.split() == ["b", "ok"]
