"""Thin helpers shared by the notebooks: config, data, plots (and, as the series grows, models, training...)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of notebooks
