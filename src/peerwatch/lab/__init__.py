"""The lab: benign generated content and (later) real local peers on loopback, for tests and
demo."""
