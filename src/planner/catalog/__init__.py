"""Catalogs: YAML files users edit (models, GPUs) turned into typed, frozen specs."""

from planner.catalog.hardware import GpuSpec, list_gpus, load_gpu
from planner.catalog.models import Architecture, ModelSpec, list_models, load_model, search_models

__all__ = [
    "Architecture",
    "GpuSpec",
    "ModelSpec",
    "list_gpus",
    "list_models",
    "load_gpu",
    "load_model",
    "search_models",
]
