"""Thin helpers shared by the notebooks: config, data, plots (and, as the series grows, models, training...)."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO lines are noise in a notebook


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with the process's stderr muted.

    TF 2.21 prints INFO lines (oneDNN, "Could not find cuda drivers") before its logging is configured, so
    ``TF_CPP_MIN_LOG_LEVEL`` cannot hide them, and on a machine without a GPU the first device query logs a
    harmless CUDA error; both happen here, muted. Set ``TF_CPP_MIN_LOG_LEVEL=0`` to see them again.
    Python exceptions raised by the import are unaffected.
    """
    if "tensorflow" in sys.modules or os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0":
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow

            tensorflow.config.list_physical_devices()  # the CUDA probe logs "failed call to cuInit" on CPUs
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_import_tensorflow_quietly()
