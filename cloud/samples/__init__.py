"""Samples captured by devices: upload grants (`grants`) and the operator's view (`catalog`)."""
