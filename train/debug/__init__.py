"""Offline SageMaker Debugger and Profiler insight: tensor rules, profiler rules and the HTML report."""
