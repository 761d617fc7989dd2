"""KeyedTable on its own: what the operator sees after rows arrive, whatever the frame timing."""

from __future__ import annotations

import asyncio

from textual.app import App

from ari_console.tui.widgets.keyed_table import KeyedTable


class OneTable(App):
    CSS = "KeyedTable { height: 1fr; }"  # as on the console's screens: rows arriving do not resize it

    def compose(self):
        yield KeyedTable(["uid", "state"], id="t")


def test_a_row_drawn_before_the_widths_are_measured_is_drawn_again_at_full_width():
    async def run() -> list[str]:
        app = OneTable()
        async with app.run_test(size=(80, 10)) as pilot:
            table = app.query_one(KeyedTable)
            table.sync({"X1": ("X1", "ok")})
            await pilot.pause(0.2)
            table.sync({"X1": ("X1", "ok"), "uid://A001/X1f4/X1c": ("uid://A001/X1f4/X1c", "running")})
            # A frame drawn now, before the table's idle pass has measured the new row,
            # shows its cells at the old column widths.
            early = [table.render_line(y).text for y in range(3)]
            await pilot.pause(0.2)
            return early, [table.render_line(y).text for y in range(3)]

    early, later = asyncio.run(run())
    assert "uid://A001/X1f4/X1c" not in "".join(early)  # the frame the race draws
    assert "uid://A001/X1f4/X1c" in later[2] and "running" in later[2]
