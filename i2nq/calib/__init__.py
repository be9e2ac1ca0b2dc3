"""Calibration, QAT fine-tuning, float training and evaluation of SR models (torch)."""
