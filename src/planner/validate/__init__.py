"""Checks of the models against measured runs (`planner validate memory CASES.yaml`)."""
