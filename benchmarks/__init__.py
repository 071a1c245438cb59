"""Measurements of the framework (not tests): training throughput and first-run data generation.

python -m benchmarks.throughput --help
python -m benchmarks.generation --help
"""
