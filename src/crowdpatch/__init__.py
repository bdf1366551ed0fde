"""crowdpatch: human attention from crowdsourced patch labeling, for classifiers that stop using shortcuts."""

__version__ = "0.1.0"
