"""What the trainer and the launcher must agree on: metric lines and their regexes, the search space, the
in-job rule names and their hyperparameters. Imported by both sides; imports neither."""
