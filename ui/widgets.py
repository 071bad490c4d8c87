"""The page's own widgets and style: a setting's slider, one result column's outputs, and the CSS."""

from __future__ import annotations

import gradio as gr

from pipeline.bounds import SETTING_BOUNDS
from pipeline.settings import Settings
from ui.inputs import css_id
from ui.updates import ColumnOutputs

#: The page's own style (``launch(css=...)``): gallery captions wrap instead of being cut off, and on a phone
#: (under 640 px) the results stack one column under the other, the timings table in a smaller type, and
#: nothing is wider than the screen (a wide table scrolls inside its own box).
CSS = """
[id^="gallery-"] .caption-label { white-space: normal; overflow: visible; text-overflow: clip; }
@media (max-width: 640px) {
  .gradio-container { padding-left: 6px !important; padding-right: 6px !important; }
  #results > .column { min-width: 100% !important; }
  #timings table { font-size: 12px; }
  #tokens-plot, #timings, #timeline { max-width: 100%; overflow-x: auto; }
}
"""


def slider(name: str, defaults: Settings, label: str) -> gr.Slider:
    """A setting's slider: its range and step from ``pipeline.bounds`` (what ``Settings`` accepts)."""
    bound = SETTING_BOUNDS[name]
    return gr.Slider(
        bound.low,
        bound.high,
        value=getattr(defaults, name),
        step=bound.step,
        label=label,
        elem_id=name.replace("_", "-"),
    )


def column_outputs(method: str) -> ColumnOutputs:
    key = css_id(method)
    return ColumnOutputs(
        answer=gr.Textbox(label="Answer", lines=4, interactive=False, elem_id=f"answer-{key}"),
        tokens=gr.Markdown(elem_id=f"tokens-{key}"),
        gallery=gr.Gallery(label="Kept frames", columns=2, height=300, elem_id=f"gallery-{key}"),
        moments_btn=gr.Button("Kept moments (MP4)", size="sm"),
        moments=gr.Video(
            label=f"Kept moments of {method}", interactive=False, visible=False, elem_id=f"moments-{key}"
        ),
    )
