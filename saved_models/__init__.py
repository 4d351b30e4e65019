"""Trained models shipped with mtlzoo (one folder each), installed as `mtlzoo.zoo_models`; see `mtlzoo.zoo`."""
