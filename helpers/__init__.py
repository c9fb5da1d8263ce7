"""Thin helpers shared by the notebooks: config, data, models, training, explain, plots, results..."""
import os
import sys

# The helpers use tf.data and tf.GradientTape, so Keras must run on TensorFlow: set it before Keras is imported
# (the variable also overrides a backend chosen in ~/.keras/keras.json).
if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
    raise ImportError(f"KERAS_BACKEND={os.environ['KERAS_BACKEND']!r}, but the helpers need the TensorFlow "
                      "backend (tf.data pipelines, GradientTape). Unset it or set KERAS_BACKEND=tensorflow.")
os.environ["KERAS_BACKEND"] = "tensorflow"
if "keras" in sys.modules and sys.modules["keras"].backend.backend() != "tensorflow":
    raise ImportError("Keras was imported before the helpers with another backend; import helpers first, or "
                      "set KERAS_BACKEND=tensorflow, and restart the kernel.")
# TensorFlow's C++ log lines are noise in a notebook: INFO and WARNING, and the graph optimiser's harmless
# "remapper failed" ERROR lines (Python exceptions are unaffected). TF_CPP_MIN_LOG_LEVEL=0 shows them all again.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


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
    # TF's Python-side warnings (e.g. "triggered tf.function retracing" when a notebook predicts with several
    # models in turn) are advice for library authors; the same TF_CPP_MIN_LOG_LEVEL=0 shows them again.
    tensorflow.get_logger().setLevel("ERROR")


_import_tensorflow_quietly()
