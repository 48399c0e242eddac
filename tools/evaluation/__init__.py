"""Judging a model: annotations, per-step mAP, start-event metrics, the offline reference path,
the judge against the bar, and the timeline plot."""
