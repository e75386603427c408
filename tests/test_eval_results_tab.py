"""The Results tab: intervals in the cells, extra rows as columns, comparisons said in words."""

from __future__ import annotations

from textual.app import App
from textual.widgets import DataTable, Static

from workbench.app.eval_results import comparison_text, table_rows
from workbench.app.widgets.eval_table import EvalTable

EVALUATION = {
    "dsr": {"rank1": 0.625, "psnr": 23.0}, "dsr_base": {"rank1": 0.5}, "bicubic": {"rank1": 0.5, "psnr": 22.25},
    "hr": {"rank1": 0.875},
    "intervals": {"resamples": 1000, "seed": 0,
                  "rows": {"dsr": {"rank1": [0.412, 0.8]}, "bicubic": {"rank1": [0.3, 0.7]}}},
    "comparisons": {
        "dsr_vs_bicubic": {"a": "dsr", "b": "bicubic", "difference": 0.125, "interval": [-0.05, 0.3],
                           "mcnemar": {"a_only": 3, "b_only": 1, "p": 0.625}, "significant": False},
        "dsr_finetuned_vs_base": {"a": "dsr", "b": "dsr_base", "difference": 0.125, "interval": [0.02, 0.25],
                                  "mcnemar": {"a_only": 9, "b_only": 1, "p": 0.021484375}, "significant": True}},
}


def test_rows_carry_intervals_and_extra_columns():
    rows = {row[0]: row[1:] for row in table_rows(EVALUATION)}
    assert rows["rank1"] == ("62.5% [41.2, 80.0]", "50.0%", "50.0% [30.0, 70.0]", "87.5%")
    assert rows["psnr"] == ("23.00 dB", "-", "22.25 dB", "-")
    text = comparison_text(EVALUATION)
    assert "DSR vs bicubic: +12.5 points [-5.0, +30.0], not significant (McNemar p=0.62)" in text
    assert "DSR vs DSR + base: +12.5 points [+2.0, +25.0], significant (McNemar p=0.021)" in text


class _Host(App):
    def compose(self):
        yield EvalTable()


async def test_the_widget_shows_extra_columns_and_the_comparisons():
    app = _Host()
    async with app.run_test(size=(140, 40)) as pilot:
        widget = app.query_one(EvalTable)
        comparisons = app.query_one("#eval-comparisons", Static)
        assert comparisons.display is False
        widget.show(EVALUATION, "x/eval.json")
        await pilot.pause()
        assert widget.cell("rank1", "dsr") == "62.5% [41.2, 80.0]" and widget.cell("rank1", "dsr_base") == "50.0%"
        assert [str(c.label) for c in app.query_one(DataTable).columns.values()] == [
            "metric", "DSR", "DSR + base", "bicubic", "HR"]
        assert comparisons.display is True and "not significant (McNemar p=0.62)" in str(comparisons.render())
        widget.show({"dsr": None, "bicubic": {"rank1": 0.5}, "hr": {}}, "y/eval.json")   # an older eval.json
        await pilot.pause()
        assert widget.cell("rank1", "bicubic") == "50.0%" and comparisons.display is False
        assert len(app.query_one(DataTable).columns) == 4


WIDE_EVALUATION = {
    **{row: {m: 0.5 for m in ("rank1", "rank5", "eer", "tar_at_far_1e-2", "tar_at_far_1e-3")}
       for row in ("dsr", "dsr_base", "bicubic", "bicubic_base", "hr")},
    "intervals": {"resamples": 1000, "seed": 0,
                  "rows": {row: {m: [0.412, 0.8] for m in ("rank1", "rank5", "eer")}
                           for row in ("dsr", "dsr_base", "bicubic", "bicubic_base", "hr")}},
}


async def test_five_rows_with_intervals_fit_a_narrow_panel_by_leaving_the_intervals_out():
    app = _Host()
    async with app.run_test(size=(80, 24)) as pilot:
        widget = app.query_one(EvalTable)
        widget.show(WIDE_EVALUATION, "x/eval.json")
        await pilot.pause()
        table = app.query_one(DataTable)
        assert widget.cell("rank1", "hr") == "50.0%"                      # HR is there, its interval left out
        assert table.virtual_size.width <= table.size.width                 # every column fits
        assert "intervals left out" in str(app.query_one("#eval-source", Static).render())
        await pilot.resize_terminal(200, 40)                                # room again: the intervals come back
        await pilot.pause()
        await pilot.pause()
        assert widget.cell("rank1", "hr") == "50.0% [41.2, 80.0]"
        assert "intervals left out" not in str(app.query_one("#eval-source", Static).render())
