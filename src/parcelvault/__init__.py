"""parcelvault: shipment tracking that is open about parcels and closed about people."""

__version__ = "0.1.0"
