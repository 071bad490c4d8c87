"""One comparison run: settings, the shared work, every method, run cards and caches. No gradio here."""

__version__ = "0.1.0"
