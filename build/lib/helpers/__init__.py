"""Thin helpers shared by the notebooks: config, data, models, training, explain, plots, results...

Importing the package prepares what Keras and TensorFlow read when they are first imported (the TensorFlow
backend, quiet start-up logging); it imports neither, so ``python -m helpers.evaluate --help`` answers at once.
"""
import importlib.abc
import importlib.util
import logging
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
# TensorFlow's C++ log lines are noise in a notebook; TF_CPP_MIN_LOG_LEVEL=0 shows them all again.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Mutes the process's stderr while TensorFlow is first imported, whoever imports it (Keras, a helper).

    TF 2.21 prints INFO lines (oneDNN, "Could not find cuda drivers") before its logging is configured, so
    ``TF_CPP_MIN_LOG_LEVEL`` cannot hide them, and on a machine without a GPU the first device query logs a
    harmless CUDA error; both happen inside the muted import. Python exceptions are unaffected. Its Python-side
    warnings (e.g. "triggered tf.function retracing") are advice for library authors: set to ERROR.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: the real finder answers from here on
        spec = importlib.util.find_spec(fullname)
        if spec is not None:
            self._loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as devnull:
                os.dup2(devnull.fileno(), 2)
                self._loader.exec_module(module)
                module.config.list_physical_devices()  # the CUDA probe logs "failed call to cuInit" on CPUs
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        module.get_logger().setLevel(logging.ERROR)


if "tensorflow" not in sys.modules and os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0":
    sys.meta_path.insert(0, _QuietTensorFlowImport())
