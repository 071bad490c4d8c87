"""The Evaluation tab: finished evaluations shipped with the Space, read and shown, never run here.

``EvalTab`` reads every finished folder under ``examples/evaluations/`` (``evaluation.find_results``,
``load_results``) once, at build time, and shows the chosen one (``ui.evalview``): accuracy against budget
per method with interval bars, the results, paired differences and per-group tables, and a question browser
(all, methods disagree, all wrong) where clicking a question opens it as a comparison on the page, its
video and prompt filled in. Running an evaluation is ``cli.py eval``'s work, on the maintainer's machine.
"""

from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr

from evaluation.report import EvalResults, ResultsError, find_results, load_results
from ui import evalview
from ui.edge import at_the_edge

log = logging.getLogger("arena")
COMPARE_TAB, EVAL_TAB = "compare", "evaluation"
NONE_SHIPPED = (
    "No finished evaluation is shipped with this Space. `python cli.py eval ... --out "
    "examples/evaluations/NAME` writes one (README, Evaluation)."
)


def shipped(root: Path = evalview.SHIPPED) -> dict[str, EvalResults]:
    """The finished evaluations under ``root`` by their label; a folder that is not one is logged, left out."""
    found = {}
    for folder in find_results(root) if root.is_dir() else []:
        try:
            results = load_results(folder)
        except ResultsError as err:
            log.warning("evaluation %s left out: %s", folder.name, err)
            continue
        found[evalview.label(results)] = results
    return found


class EvalTab:
    """The tab's components and handlers; ``build`` lays it out inside a ``gr.Tab``."""

    def __init__(self, root: Path = evalview.SHIPPED) -> None:
        self.found = shipped(root)

    def build(self) -> None:
        if not self.found:
            gr.Markdown(NONE_SHIPPED, elem_id="eval-none")
            return
        first = next(iter(self.found))
        gr.Markdown(
            "Finished evaluations (`cli.py eval`), shipped with the Space: nothing runs here. Accuracy in %, "
            "95% intervals from a cluster bootstrap over videos; failed and unparsed replies count as wrong."
        )
        self.chooser = gr.Dropdown(list(self.found), value=first, label="Evaluation", elem_id="eval-choice")
        shown = self.view(first)
        self.figure = gr.Plot(
            shown[0], label="Accuracy against budget (95% intervals)", elem_id="eval-figure"
        )
        self.results = _table(shown[1], "Per method and budget", "eval-results")
        self.paired = _table(shown[2], "Paired differences against uniform", "eval-paired")
        self.groups = _table(shown[3], "Per group", "eval-groups")
        self.filter = gr.Radio(list(evalview.FILTERS), value="all questions", label="Questions")
        self.questions = _table(self.browse(first, "all questions"), "Click a question to open it", "eval-q")

    def view(self, name: str) -> tuple:
        """The figure and the three tables of the evaluation named ``name``."""
        summary = self.found[name].summary
        return (
            evalview.accuracy_figure(summary),
            evalview.results_table(summary),
            evalview.paired_table(summary),
            evalview.groups_table(summary),
        )

    def entries(self, name: str, keep: str) -> list[dict]:
        return [q for q in evalview.questions(self.found[name].predictions) if evalview.FILTERS[keep](q)]

    def browse(self, name: str, keep: str):
        return evalview.question_table(self.entries(name, keep))

    def open_question(self, name: str, keep: str, evt: gr.SelectData):
        """The clicked question as a comparison: its video (when shipped) and prompt, on the Compare tab."""
        entry = self.entries(name, keep)[evt.index[0]]
        video = evalview.video_of(self.found[name].folder, entry)
        if video is None:
            raise gr.Error(f"The video of {entry['qid']} is not shipped with this evaluation.")
        status = f"Question {entry['qid']} of the evaluation, filled in: press Compare to run it."
        return str(video), entry["prompt"] or entry["question"], status, gr.Tabs(selected=COMPARE_TAB)

    def wire(self, video, question, status, tabs) -> None:
        """Events: another evaluation or filter redraws; a question clicked opens on the Compare tab."""
        if not self.found:
            return
        outputs = [self.figure, self.results, self.paired, self.groups]
        self.chooser.change(at_the_edge(self.view), self.chooser, outputs, show_progress="hidden")
        browse = at_the_edge(self.browse)
        for trigger in (self.chooser.change, self.filter.change):
            trigger(browse, [self.chooser, self.filter], self.questions, show_progress="hidden")
        self.questions.select(
            at_the_edge(self.open_question),
            [self.chooser, self.filter],
            [video, question, status, tabs],
            show_progress="hidden",
        )


def _table(value, label: str, elem_id: str) -> gr.Dataframe:
    return gr.Dataframe(value, label=label, interactive=False, wrap=True, elem_id=elem_id)
