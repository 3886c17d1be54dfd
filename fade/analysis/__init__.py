"""Reading finished runs back: sweep tables (aggregate.py) and the layer dashboard (dashboard/)."""
