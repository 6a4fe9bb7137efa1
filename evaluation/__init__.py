"""Evaluation: WER and latency of streaming engines on speech manifests.

Modules: :mod:`~evaluation.manifest` (reading manifests), :mod:`~evaluation.normalize`
(text normalisation), :mod:`~captions.simulate` (computation-aware simulation),
:mod:`~evaluation.alignment` (word matching and timing), :mod:`~evaluation.offline`
(offline recognition), :mod:`~evaluation.metrics` (WER, latencies), :mod:`~evaluation.plot`,
:mod:`~evaluation.evaluate` (one run), :mod:`~evaluation.bench` (concurrency benchmark).
"""
