"""The page's parts below ``app.py``: the edge where failures become sentences, scratch folders, turning a
comparison's events into component updates, and the page object whose handlers close over its own
components. Only ``app.py`` and this package import gradio."""
