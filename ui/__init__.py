"""The page's parts below ``app.py``: the edge where failures become sentences, scratch folders, turning a
comparison's events into component updates, and the page object whose handlers close over its own
components. Only ``app.py`` and this package import gradio."""

import matplotlib

# Gradio asks matplotlib for its backend around every update it sends (utils.MatplotlibBackendMananger) and
# puts it back afterwards; left at "auto", each ask resolves the backend again (~90 ms measured here), so a
# streamed comparison paid it on every update. The page draws off-screen only.
matplotlib.use("Agg")
