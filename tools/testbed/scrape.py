"""One scrape of a Prometheus endpoint, and the quantiles of the histograms it serves.

The benchmark, the soak and the system tests all read the pipeline's
``/metrics`` this way; a sample is keyed by its name and its labels, sorted.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, timeout_s: float = 10.0) -> Samples:
    """Every sample ``url`` serves now: ``{(name, ((label, value), ...)): value}``."""
    text = urllib.request.urlopen(url, timeout=timeout_s).read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def histogram_buckets(samples: Samples, metric: str, **labels: str) -> dict[float, float]:
    """Cumulative counts of histogram ``metric`` per bucket bound, summed over its series that carry ``labels``."""
    buckets: dict[float, float] = {}
    for (name, sample_labels), value in samples.items():
        found = dict(sample_labels)
        if name == f"{metric}_bucket" and all(found.get(k) == v for k, v in labels.items()):
            bound = float(found["le"])
            buckets[bound] = buckets.get(bound, 0.0) + value
    return buckets


def bucket_quantile(buckets: Mapping[float, float], q: float) -> float | None:
    """The q-quantile of cumulative bucket counts, interpolated within its bucket as Prometheus's
    histogram_quantile does (beyond the last finite bound: that bound); None when nothing was counted."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return None
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return previous_bound
            width = count - previous_count
            return previous_bound + (bound - previous_bound) * ((rank - previous_count) / width if width else 1.0)
        previous_bound, previous_count = bound, count
    return None  # only when q > 1: the last bucket holds every count


def interval_quantile(before: Mapping[float, float], after: Mapping[float, float], q: float) -> float | None:
    """The q-quantile of what a histogram counted between two scrapes of its buckets."""
    return bucket_quantile({bound: count - before.get(bound, 0.0) for bound, count in after.items()}, q)


def histogram_quantile(samples: Samples, metric: str, q: float, **labels: str) -> float | None:
    """The q-quantile of histogram ``metric`` over its series that carry ``labels``."""
    return bucket_quantile(histogram_buckets(samples, metric, **labels), q)
