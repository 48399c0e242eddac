"""Training a head: the feature caches, the labelled data set, the training loop and its settings,
and the tuning of the event detector."""
