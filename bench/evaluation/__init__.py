"""The experiments of `make eval` (bench/eval.py), in the paper's order.
Each module has NAME, TITLE, PAPER (its published value, or None),
run(ctx) -> JSON-able data and render(data, ctx) -> a Markdown section that
embeds the figure it saved with ctx.save_figure."""
import importlib

ORDER = ("robustness", "generality", "apps", "fio", "console", "debloat", "usecases")


def experiments(names=ORDER):
    return [importlib.import_module(f"bench.evaluation.{n}") for n in ORDER if n in names]
