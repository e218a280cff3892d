"""Shared building blocks of the emd-pipeline: one module per concern.

The workers in ``workers/`` only wire Kafka topics to the plain functions here.
"""
