"""GPU devices, inventories and placement."""

from .devices import Device, Inventory, format_devices, format_equivalents, kind_of
from .placement import place

__all__ = ["Device", "Inventory", "format_devices", "format_equivalents", "kind_of", "place"]
