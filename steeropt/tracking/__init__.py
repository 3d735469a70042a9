"""Tracking: what a study records and where. MLflow runs (tracker, client), sample traces and the labels people
add to them (traces, labels), the notes on MLflow's pages (notes), and the files under runs/<study>/ (run_dir).

    >>> tracker = Tracker(None, "steeropt", "quickstart")                      # doctest: +SKIP
    >>> log_run("comparison", "a-vs-b", params, metrics, files, tracking_uri=None, experiment="steeropt")
    >>> parent, trials = study_runs(None, "quickstart")
"""
from steeropt.tracking.client import (EXPERIMENT_KIND, KIND_TAG, REVIEW_TAG, SAMPLE_TAG, STUDY_TAG, TRIAL_TAG, client,
                                      log_run, probe, study_runs, ui_url)
from steeropt.tracking.tracker import Tracker
from steeropt.tracking.traces import LABEL_SCALE, flush_traces, log_traces, review_queue, sample_traces, traced

__all__ = ["EXPERIMENT_KIND", "KIND_TAG", "LABEL_SCALE", "REVIEW_TAG", "SAMPLE_TAG", "STUDY_TAG", "TRIAL_TAG", "Tracker",
           "client", "flush_traces", "log_run", "log_traces", "probe", "review_queue", "sample_traces", "study_runs",
           "traced", "ui_url"]
