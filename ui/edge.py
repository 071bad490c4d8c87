"""The edge: every failure of a handler becomes one sentence for the visitor, never a traceback.

What the visitor can fix (a bad video, link, question, setting or card; weights that cannot be loaded) is
shown as its own sentence and logged as one line; running out of memory gets one sentence and frees memory;
anything else is our fault: logged here with its traceback, shown as one line naming the error's type.
"""

from __future__ import annotations

import functools
import inspect
import logging

import gradio as gr
import torch

import media
import model_zoo
from pipeline import runcard
from pipeline.accounting import OUT_OF_MEMORY, free_memory
from pipeline.settings import SettingsError
from pipeline.video import QuestionError

USER_ERRORS = (media.VideoError, QuestionError, SettingsError, runcard.CardError, model_zoo.ModelLoadError)
UNEXPECTED = "Something went wrong on our side ({name}); please try again, and report it if it happens again."
log = logging.getLogger("arena")


def visitor_error(err: Exception) -> gr.Error:
    """The sentence a visitor sees: theirs for what they can fix, one line for the rest.

    The server log gets one line for a visitor's mistake and the traceback only for our own faults (Gradio
    is told not to print its own: ``print_exception=False`` marks an error already logged here).
    """
    if isinstance(err, gr.Error):
        if err.print_exception:  # raised as a gr.Error by a handler: a refusal, not yet logged
            log.warning("refused: %s", err.message)
            err.print_exception = False
        return err
    if isinstance(err, USER_ERRORS):
        log.warning("refused (%s): %s", type(err).__name__, err)
        return gr.Error(str(err), print_exception=False)
    if is_out_of_memory(err):
        log.warning("out of memory in a handler: %s", str(err).splitlines()[0][:200] if str(err) else "")
        return gr.Error(OUT_OF_MEMORY, print_exception=False)
    log.error("unexpected error in a handler", exc_info=err)
    return gr.Error(UNEXPECTED.format(name=type(err).__name__), print_exception=False)


def is_out_of_memory(err: Exception) -> bool:
    # torch raises OutOfMemoryError on CUDA but a plain RuntimeError when the CPU allocator fails
    cpu = isinstance(err, RuntimeError) and "can't allocate memory" in str(err)
    return isinstance(err, (torch.OutOfMemoryError, MemoryError)) or cpu


def _fail(error: gr.Error):
    if error.message == OUT_OF_MEMORY:
        free_memory()
    raise error


def at_the_edge(handler):
    """Wrap an event handler so that it raises only gr.Error, each with one sentence, never a traceback.

    Memory is freed after the ``except`` block: inside it, the traceback still holds the failed frames'
    tensors. Generator handlers stay generators (Gradio streams them); the signature is the handler's own.
    """
    if inspect.isgeneratorfunction(handler):

        @functools.wraps(handler)
        def streaming(*args, **kwargs):
            try:
                return (yield from handler(*args, **kwargs))
            except Exception as err:
                error = visitor_error(err)
            _fail(error)

        return streaming

    @functools.wraps(handler)
    def plain(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except Exception as err:
            error = visitor_error(err)
        _fail(error)

    return plain
